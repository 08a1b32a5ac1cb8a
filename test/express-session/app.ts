/**
 * The Express app the express-session tests run their middleware in (express-session's own, or the
 * drop-in), with the routes they use: sign in, read, set, slow routes held by a gate, regenerate,
 * logout, and a dump of the session.
 */
import type { AddressInfo } from 'node:net'
import express from 'express'

type Data = Record<string, unknown>
/** `req.session` as express-session types it (the project's own Express types describe latchkey's). */
interface OldSession {
  regenerate(callback: (error?: unknown) => void): void
  destroy(callback: (error?: unknown) => void): void
}
const data = (req: express.Request): Data => req.session as unknown as Data
const old = (req: express.Request): OldSession => req.session as unknown as OldSession

/** A promise the test opens: the slow routes wait for it. */
export interface Gate {
  readonly opened: Promise<void>
  open(): void
}

export function gate(): Gate {
  let open = (): void => {}
  const opened = new Promise<void>((resolve) => {
    open = resolve
  })
  return { opened, open }
}

export interface AppOptions {
  /** What `/slow` and `/slow-read` wait for; default a gate nobody opens. */
  slow?: Gate
  /** Answer an error with its status and `error: <message>` (default: Express's own error page). */
  errorPage?: boolean
}

/** Starts the app on `middleware`, its server added to `servers` (closed by the caller); resolves its base URL. */
export async function startApp(
  middleware: unknown,
  servers: Array<{ close(): void }>,
  options: AppOptions = {},
): Promise<string> {
  const slow = options.slow ?? gate()
  const app = express()
    .use(middleware as express.RequestHandler)
    .get('/login', (req, res) => {
      data(req).user = req.query.name
      res.send(req.sessionID)
    })
    .get('/me', (req, res) => {
      res.send(String(data(req).user ?? 'nobody'))
    })
    .get('/set', (req, res) => {
      data(req)[String(req.query.key)] = req.query.value
      res.send('ok')
    })
    .get('/slow-read', async (req, res) => {
      const user = String(data(req).user ?? 'nobody')
      await slow.opened
      res.send(user)
    })
    .get('/slow', async (req, res) => {
      data(req)[String(req.query.key)] = req.query.value
      await slow.opened
      res.send('ok')
    })
    .get('/regenerate', (req, res, next) => {
      old(req).regenerate((error) => {
        if (error) return next(error)
        data(req).user = 'after regenerate'
        res.send(req.sessionID)
      })
    })
    .get('/logout', (req, res, next) => {
      old(req).destroy((error) => (error ? next(error) : res.send('bye')))
    })
    .get('/dump', (req, res) => {
      res.json(req.session)
    })
  if (options.errorPage) {
    app.use((error: unknown, _req: express.Request, res: express.Response, _next: express.NextFunction) => {
      res.status((error as { status?: number }).status ?? 500).send(`error: ${(error as Error).message}`)
    })
  }
  const server = app.listen(0, '127.0.0.1')
  servers.push(server)
  await new Promise((resolve) => server.once('listening', resolve))
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`
}
