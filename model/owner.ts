import { IsogroupError } from '../errors.js';

// Owners and the subjects that ask for them: the names the whole tool uses for who gets a group.

/** Who asks: from SO_PEERCRED (uid, gid) or this process, named from the user database. */
export interface Subject {
  name: string;
  uid: number;
  gids: number[];
}

/** An owner is a user or service name: 1-64 of A-Z a-z 0-9 _ . @ -, not starting with . @ - (the one rule). */
const OWNER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,63}$/;

export const OWNER_NAME_RULE = '1-64 of A-Z a-z 0-9 _ . @ -, not starting with . @ -';

export const isOwnerName = (value: unknown): value is string => typeof value === 'string' && OWNER_NAME.test(value);

/** The one permission rule: root acts for anyone, any other subject only for itself (E_PERMISSION). */
export const requireSelfOrRoot = (subject: Subject, owner: string, what: string): void => {
  if (subject.uid !== 0 && subject.name !== owner)
    throw new IsogroupError('E_PERMISSION', `${subject.name} (uid ${subject.uid}) may not ${what} ${owner}`, { subject: subject.name, owner });
};
