// Telling a view's listeners: one that throws must not stop the others, nor whoever called.

export function notify<T>(listeners: ReadonlySet<(v: T) => void>, v: T): void {
  for (const fn of listeners) {
    try {
      fn(v);
    } catch (err) {
      process.emitWarning(`holdfast stats listener failed: ${(err as Error).stack ?? String(err)}`);
    }
  }
}
