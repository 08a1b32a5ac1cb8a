/**
 * Two hooks on a node response, for the middleware: one run just before the headers are written (to
 * add the session cookie), and a hold on `res.end` so that the session is saved before the response
 * completes. At `end`, the headers are fixed at once (as node would: later `setHeader` calls throw),
 * but the body given to `end` waits for the save: the client sees no complete response before the
 * store has answered, and a failed save destroys the response instead of completing it.
 */
import type { OutgoingHttpHeaders, ServerResponse } from 'node:http'

type Headers = OutgoingHttpHeaders | ReadonlyArray<string | readonly string[]>

/** Runs `listener` once, just before `res` writes its headers; headers given to writeHead are set first. */
export function beforeHeaders(res: ServerResponse, listener: () => void): void {
  const writeHead = res.writeHead
  let fired = false
  res.writeHead = function held(this: ServerResponse, statusCode: number, ...rest: unknown[]) {
    if (fired) return (writeHead as (...args: unknown[]) => ServerResponse).call(this, statusCode, ...rest)
    fired = true
    const reason = typeof rest[0] === 'string' ? rest[0] : undefined
    const headers = (typeof rest[0] === 'string' ? rest[1] : rest[0]) as Headers | undefined
    this.statusCode = statusCode
    if (headers) setAll(this, headers)
    listener()
    const write = writeHead as (...args: unknown[]) => ServerResponse
    return reason === undefined
      ? write.call(this, this.statusCode)
      : write.call(this, this.statusCode, reason)
  } as ServerResponse['writeHead']
}

function setAll(res: ServerResponse, headers: Headers): void {
  if (!Array.isArray(headers)) {
    for (const [key, value] of Object.entries(headers)) if (value !== undefined) res.setHeader(key, value)
    return
  }
  if (Array.isArray(headers[0])) {
    for (const [key, value] of headers as ReadonlyArray<readonly string[]>)
      res.setHeader(key as string, value as string)
    return
  }
  for (let i = 0; i + 1 < headers.length; i += 2)
    res.setHeader(headers[i] as string, headers[i + 1] as string)
}

/**
 * Holds `res.end` while the task runs. On success the held end goes through; on failure `onError`
 * gets the error and the response is destroyed, never completed as if the session were saved.
 */
export function holdEnd(
  res: ServerResponse,
  task: () => ((done: (error?: unknown) => void) => void) | undefined,
  onError: (error: unknown) => void,
): void {
  const end = res.end
  let ended = false
  res.end = function held(this: ServerResponse, ...args: unknown[]) {
    if (ended) return this
    ended = true
    const run = task()
    const finish = (): ServerResponse => (end as (...a: unknown[]) => ServerResponse).apply(this, args)
    if (!run) return finish()
    if (!this.headersSent) this.writeHead(this.statusCode)
    run((error) => {
      if (error === undefined || error === null) {
        finish()
        return
      }
      this.destroy()
      onError(error)
    })
    return this
  } as ServerResponse['end']
}
