// Newline-delimited JSON answers (the playground's chat, RAG ingest progress), one object per line
// as it arrives; a line split across network chunks is joined first.
export async function readLines<T>(response: Response, onLine: (value: T) => void): Promise<void> {
  if (!response.body) return;
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop() ?? "";
    for (const line of lines) if (line.trim()) onLine(JSON.parse(line) as T);
  }
  if (buffer.trim()) onLine(JSON.parse(buffer) as T);
}
