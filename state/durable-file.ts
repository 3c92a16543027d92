import fs from 'node:fs';
import * as path from 'node:path';

// State files (journal, contexts, hand-offs) are replaced whole: a crash leaves the old file or the new
// one, never a torn one. Write a fresh temporary sibling (O_EXCL), every byte, fsync it, rename it over
// the file, then fsync the directory so the rename itself survives a power cut.

const fsyncDir = (dir: string): void => {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, fs.constants.O_RDONLY);
    fs.fsyncSync(fd);
  } catch {
    /* some filesystems refuse fsync on a directory; the rename is still atomic */
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
};

/** Replace `file` atomically and durably. Throws the underlying fs error; nothing is left behind on failure. */
export const replaceFileDurably = (file: string, content: string | Buffer, mode = 0o600): void => {
  const data = typeof content === 'string' ? Buffer.from(content, 'utf8') : content;
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${Date.now().toString(36)}.tmp`);
  try {
    const fd = fs.openSync(tmp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode);
    try {
      let off = 0;
      while (off < data.length) off += fs.writeSync(fd, data, off, data.length - off);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (error) {
    fs.rmSync(tmp, { force: true });
    throw error;
  }
  fsyncDir(dir);
};
