/** A deterministic pseudo-random source (xorshift32): rand(n) is in [0, n), and a failure reproduces. */
export const seededRandom = (seed: number): ((n: number) => number) => {
  let x = seed | 0 || 1;
  return (n) => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) % n;
  };
};
