// Server-sent events over fetch (EventSource cannot send the Authorization header), parsed by
// eventsource-parser; useEventStream reconnects with a growing pause and says whether it is live.
import { createParser, type EventSourceMessage } from "eventsource-parser";
import { useEffect, useRef, useState } from "react";
import { raw } from "./client";

export async function readEvents(path: string, onEvent: (event: EventSourceMessage) => void, signal: AbortSignal): Promise<void> {
  const response = await raw(path, { headers: { Accept: "text/event-stream" }, signal });
  if (!response.body) return;
  const parser = createParser({ onEvent });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    parser.feed(value);
  }
}

export interface StreamState {
  live: boolean;
  error: string | null;
  lastEventAt: number | null;
}

/** Follow ``path`` while mounted (``null``: not now); ``stop`` returns true from the handler to end it for good. */
export function useEventStream(path: string | null, onEvent: (event: EventSourceMessage) => boolean | void): StreamState {
  const [state, setState] = useState<StreamState>({ live: false, error: null, lastEventAt: null });
  const handler = useRef(onEvent);
  handler.current = onEvent;
  useEffect(() => {
    if (path === null) return;
    const abort = new AbortController();
    let pause = 500;
    let ended = false;
    (async () => {
      while (!abort.signal.aborted && !ended) {
        try {
          setState((s) => ({ ...s, live: true, error: null }));
          await readEvents(
            path,
            (event) => {
              pause = 500;
              setState({ live: true, error: null, lastEventAt: Date.now() });
              if (handler.current(event) === true) {
                ended = true;
                abort.abort();
              }
            },
            abort.signal,
          );
        } catch (error) {
          if (abort.signal.aborted) break;
          setState((s) => ({ ...s, live: false, error: error instanceof Error ? error.message : String(error) }));
        }
        if (abort.signal.aborted || ended) break;
        setState((s) => ({ ...s, live: false }));
        await new Promise((resolve) => setTimeout(resolve, pause));
        pause = Math.min(pause * 2, 10_000);
      }
      setState((s) => ({ ...s, live: false }));
    })();
    return () => abort.abort();
  }, [path]);
  return state;
}
