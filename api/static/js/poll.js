// A list view's read loop: read now, then again every few seconds while the tab is visible
// (and at once when it shows again); a new read aborts the one under way, whose answer is
// then dropped.

/**
 * read(signal, current) does one read and shows it if current() still holds (no newer read
 * began, the view is still there); it shows its own errors and lets only an AbortError
 * through. Returns {refresh, stop}.
 */
export function poller(read, ms) {
  let timer = null;
  let stopped = false;
  let controller = null;

  async function refresh() {
    clearTimeout(timer);
    if (stopped) return;
    controller?.abort();
    const mine = controller = new AbortController();
    const current = () => !stopped && controller === mine;
    try {
      await read(mine.signal, current);
    } catch (err) {
      if (err.name === "AbortError") return;
      throw err;
    }
    if (current() && !document.hidden) timer = setTimeout(refresh, ms);
  }

  const onVisibility = () => { if (!document.hidden) refresh(); };
  document.addEventListener("visibilitychange", onVisibility);

  return {
    refresh,
    stop() {
      stopped = true;
      clearTimeout(timer);
      controller?.abort();
      document.removeEventListener("visibilitychange", onVisibility);
    },
  };
}
