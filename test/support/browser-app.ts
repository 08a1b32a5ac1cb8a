/**
 * The servers of the browser tests (test/browser.test.ts): a small app with sessions and CSRF
 * protection, and attacker origins serving forged pages against it. All listen on loopback: the app is
 * addressed as `http://localhost:PORT`, the same-site attacker as `http://localhost:OTHER` (cookies are
 * not port-scoped: it shares the app's cookie jar), the cross-site one as `http://127.0.0.1:OTHER2`.
 */
import { randomBytes } from 'node:crypto'
import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { NodeAdapterOptions } from '../../src/adapters/node.js'
import { formKind, parseFormFields, readBody, withSessions } from '../../src/adapters/node.js'
import type { CsrfOptions, Session } from '../../src/index.js'
import { createSessionManager, generateKey, MemoryStore } from '../../src/index.js'

type Data = Record<string, unknown>

/** A request the CSRF check refused, as the app saw it. */
export interface Refusal {
  readonly path: string
  readonly reason: string
  /** `Sec-Fetch-Site` as the browser sent it. */
  readonly site: string | null
  readonly origin: string | null
  /** The signed-in user of the session the request carried (its cookie), or `null`: no cookie came. */
  readonly user: string | null
}

/** The running app and what a test reads of its state. */
export interface VictimApp {
  /** `http://localhost:PORT` */
  readonly url: string
  readonly port: number
  readonly manager: ReturnType<typeof createSessionManager<Data>>
  /** The counter of each user, kept on the server. */
  readonly counters: Map<string, number>
  /** The private text each signed-in user's pages show: an attacker must never read it. */
  readonly secrets: Map<string, string>
  readonly refusals: Refusal[]
  close(): Promise<void>
}

const USER = /^[a-z0-9-]{1,40}$/

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)
}

/**
 * On every page: a page brought back from the back/forward cache reloads itself. `no-store` keeps a
 * page out of the HTTP cache, but Chromium (156 here) also keeps `no-store` pages in the back/forward
 * cache, and the cookie that a sign-out clears in the response to the navigation leaving the page
 * does not evict it (nor does `Clear-Site-Data`): without this, Back after signing out shows the
 * private page as it was.
 */
const RELOAD_IF_RESTORED =
  "<script>addEventListener('pageshow', (event) => { if (event.persisted) location.reload() })</script>"

function page(res: ServerResponse, status: number, title: string, body: string, head = ''): void {
  res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
  res.end(
    `<!doctype html><html><head><title>${title}</title>${head}${RELOAD_IF_RESTORED}</head><body>${body}</body></html>`,
  )
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(303, { location })
  res.end()
}

function hidden(name: string, value: string): string {
  return `<input type="hidden" name="${name}" value="${escapeHtml(value)}">`
}

/** The fields of a form body (urlencoded or multipart), or `null` when the body is not a form. */
async function formOf(req: IncomingMessage): Promise<Record<string, string> | null> {
  const type = req.headers['content-type']
  if (formKind(type) === null) return null
  return { ...(await parseFormFields(await readBody(req), type)) }
}

/**
 * Starts the app on 127.0.0.1 (the browser reaches it as `localhost`):
 * - `GET /login`: the sign-in form, with its token (a pre-session cookie, no stored session);
 *   `POST /login` signs the user in and sends them to `/private`.
 * - `GET /private` (`Cache-Control: no-store`): the user's secret, the counter with a form and a
 *   fetch button (token in the `x-csrf-token` header), the sign-out form. Signed out: a short page.
 * - `POST /counter`: adds `by` to the user's counter; the body is a form, or else parsed as JSON
 *   whatever its Content-Type (the sloppy API that `text/plain` smuggling aims at).
 * - `POST /logout` signs out; a `GET` answers 405. A `_method` query parameter overrides the method,
 *   as method-override middleware does: `GET /logout?_method=POST` is routed as a sign-out.
 * - `GET /devices`: the user's sessions, each with a revoke form; `POST /devices/revoke`.
 * Refused CSRF checks answer a 403 page and are recorded in `refusals`.
 */
export async function startApp(options: { csrf?: CsrfOptions | false } = {}): Promise<VictimApp> {
  const manager = createSessionManager<Data>({
    store: new MemoryStore(),
    keys: [generateKey()],
    cookie: { secure: false },
  })
  const counters = new Map<string, number>()
  const secrets = new Map<string, string>()
  const refusals: Refusal[] = []

  const handler = async (req: IncomingMessage, res: ServerResponse, session: Session<Data>) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    const method = url.searchParams.get('_method')?.toUpperCase() ?? req.method ?? 'GET'
    const user = session.userId
    const route = `${method} ${url.pathname}`
    switch (route) {
      case 'GET /login':
        return page(
          res,
          200,
          'Sign in',
          `<h1>Sign in</h1><p id="status">${user === null ? 'Signed out' : `Signed in as ${user}`}</p>
          <form method="post" action="/login">${hidden('_csrf', session.csrfToken())}
          <input name="user" id="user"><button id="sign-in">Sign in</button></form>`,
        )
      case 'POST /login': {
        const name = (await formOf(req))?.user ?? ''
        if (!USER.test(name)) return page(res, 400, 'Bad name', '<p id="status">Bad user name</p>')
        session.login(name)
        if (!secrets.has(name)) secrets.set(name, `secret-of-${name}-${randomBytes(8).toString('hex')}`)
        return redirect(res, '/private')
      }
      case 'GET /private': {
        if (user === null) {
          return page(res, 200, 'Signed out', '<p id="status">Signed out</p><a href="/login">Sign in</a>')
        }
        return page(
          res,
          200,
          'Private',
          `<h1>Private page</h1><p id="status">Signed in as ${user}</p>
          <p id="secret">${secrets.get(user) ?? ''}</p>
          <p>Counter: <span id="counter">${counters.get(user) ?? 0}</span></p>
          <form method="post" action="/counter">${hidden('_csrf', session.csrfToken())}${hidden('by', '1')}
          <button id="add-form">+1 (form)</button></form>
          <button id="add-fetch">+1 (fetch)</button>
          <form method="post" action="/logout">${hidden('_csrf', session.csrfToken())}
          <button id="sign-out">Sign out</button></form>
          <a href="/devices" id="devices">Your devices</a>
          <script>
          document.getElementById('add-fetch').onclick = async () => {
            const token = document.querySelector('meta[name="csrf-token"]').content
            const answer = await fetch('/counter', {
              method: 'POST',
              headers: { 'content-type': 'application/json', 'x-csrf-token': token },
              body: JSON.stringify({ by: 1 }),
            })
            document.getElementById('counter').textContent = (await answer.json()).counter
          }
          </script>`,
          `<meta name="csrf-token" content="${session.csrfToken()}">`,
        )
      }
      case 'POST /counter': {
        if (user === null) return page(res, 401, 'Signed out', '<p id="status">Signed out</p>')
        const form = await formOf(req)
        let by: unknown
        if (form !== null) by = Number(form.by)
        else {
          try {
            by = (JSON.parse((await readBody(req)).toString('utf8')) as { by?: unknown }).by
          } catch {
            by = undefined
          }
        }
        if (typeof by !== 'number' || !Number.isSafeInteger(by) || by < 1 || by > 1000) {
          return page(res, 400, 'Bad request', '<p id="status">Bad amount</p>')
        }
        const counter = (counters.get(user) ?? 0) + by
        counters.set(user, counter)
        if (form !== null) return redirect(res, '/private')
        res.writeHead(200, { 'content-type': 'application/json' })
        res.end(JSON.stringify({ counter }))
        return
      }
      case 'POST /logout':
        session.logout()
        return redirect(res, '/login')
      case 'GET /logout':
        res.setHeader('allow', 'POST')
        return page(res, 405, 'Sign out', '<p id="status">Use the Sign out button</p>')
      case 'GET /devices': {
        if (user === null) return redirect(res, '/login')
        const rows = (await manager.listUserSessions(user, { current: session })).map(
          (info) =>
            `<li class="device" data-current="${info.current}">${info.current ? 'This device' : 'Other device'}
            <form method="post" action="/devices/revoke">${hidden('_csrf', session.csrfToken())}${hidden('handle', info.handle)}
            <button class="revoke">Revoke</button></form></li>`,
        )
        return page(res, 200, 'Your devices', `<h1>Your devices</h1><ul>${rows.join('')}</ul>`)
      }
      case 'POST /devices/revoke': {
        if (user === null) return redirect(res, '/login')
        await manager.revoke((await formOf(req))?.handle ?? '', { userId: user })
        return redirect(res, '/devices')
      }
      default:
        return page(res, 404, 'Not found', '<p id="status">Not found</p>')
    }
  }

  const onCsrfError: NonNullable<NodeAdapterOptions<Data>['onCsrfError']> = (error, req, res, session) => {
    const header = (name: string) => (req.headers[name] as string | undefined) ?? null
    refusals.push({
      path: new URL(req.url ?? '/', 'http://localhost').pathname,
      reason: error.reason,
      site: header('sec-fetch-site'),
      origin: header('origin'),
      user: session.userId,
    })
    page(res, error.status, 'Refused', `<h1>Refused</h1><p id="reason">${error.reason}</p>`)
  }

  const adapterOptions: NodeAdapterOptions<Data> = { onCsrfError, onError: () => {} }
  if (options.csrf !== undefined) adapterOptions.csrf = options.csrf
  const server = await listen(createServer(withSessions(manager, handler, adapterOptions)))
  const port = (server.address() as AddressInfo).port
  return {
    url: `http://localhost:${port}`,
    port,
    manager,
    counters,
    secrets,
    refusals,
    close: async () => {
      await shut(server)
      await manager.close()
    },
  }
}

/** The running attacker origins. */
export interface Attackers {
  /** `http://localhost:OTHER`: another port of the app's host, so the same site. */
  readonly sameSite: string
  /** `http://127.0.0.1:OTHER2`: another site. */
  readonly crossSite: string
  close(): Promise<void>
}

/** The JSON a page writes into `#out` when it is done, for the test to read. */
const REPORT = `function report(value) {
  const out = document.getElementById('out')
  out.textContent = JSON.stringify(value)
  out.dataset.done = '1'
}`

/**
 * The attacker's pages, each aimed at `app`:
 * - `/form?enctype=urlencoded|multipart|text`: a form that posts itself to `/counter` (`by=100`; for
 *   `text/plain`, a field name and value that together read `{"by":100,"pad":"="}`).
 * - `/fetch`: credentialed fetches, `cors` and `no-cors`, reading `/private` and `/login` and posting to
 *   `/counter`; reports what each got.
 * - `/img`: `<img>` tags pointed at `/logout` and `/logout?_method=POST`.
 * - `/plant?value=ID`: `document.cookie = 'sid=ID; path=/'`. `/peek`: reports `document.cookie`.
 */
function attackerPages(app: string) {
  const target = JSON.stringify(app)
  return (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://attacker')
    const q = url.searchParams
    let body: string
    switch (url.pathname) {
      case '/form': {
        const enctype = q.get('enctype')
        const fields =
          enctype === 'text'
            ? `<input type="hidden" name='{"by":100,"pad":"' value='"}'>`
            : '<input type="hidden" name="by" value="100">'
        const type =
          enctype === 'text'
            ? 'text/plain'
            : enctype === 'multipart'
              ? 'multipart/form-data'
              : 'application/x-www-form-urlencoded'
        body = `<h1>You won a prize</h1>
          <form method="post" action="${app}/counter" enctype="${type}">${fields}</form>
          <script>window.addEventListener('load', () => document.forms[0].submit())</script>`
        break
      }
      case '/fetch':
        body = `<pre id="out"></pre><script>${REPORT}
          const app = ${target}
          async function attempt(request) {
            try {
              const answer = await request()
              return { type: answer.type, status: answer.status, body: await answer.text() }
            } catch (error) {
              return { blocked: error.name }
            }
          }
          const post = (mode, headers) => fetch(app + '/counter', {
            method: 'POST', mode, credentials: 'include', headers, body: '{"by":100}',
          })
          ;(async () => report({
            corsPrivate: await attempt(() => fetch(app + '/private', { credentials: 'include' })),
            noCorsPrivate: await attempt(() => fetch(app + '/private', { mode: 'no-cors', credentials: 'include' })),
            corsLogin: await attempt(() => fetch(app + '/login', { credentials: 'include' })),
            noCorsLogin: await attempt(() => fetch(app + '/login', { mode: 'no-cors', credentials: 'include' })),
            noCorsPost: await attempt(() => post('no-cors', { 'content-type': 'text/plain' })),
            corsPost: await attempt(() =>
              post('cors', { 'content-type': 'application/json', 'x-csrf-token': 'forged' })),
          }))()
          </script>`
        break
      case '/img':
        body = `<pre id="out"></pre><script>${REPORT}
          const app = ${target}
          const paths = ['/logout', '/logout?_method=POST']
          Promise.all(paths.map((path) => new Promise((resolve) => {
            const img = new Image()
            img.onload = () => resolve('loaded')
            img.onerror = () => resolve('error')
            img.src = app + path
            document.body.append(img)
          }))).then(report)
          </script>`
        break
      case '/plant':
        body = `<pre id="out"></pre><script>${REPORT}
          document.cookie = 'sid=' + ${JSON.stringify(q.get('value') ?? '')} + '; path=/'
          report(document.cookie)
          </script>`
        break
      case '/peek':
        body = `<pre id="out"></pre><script>${REPORT}
          report(document.cookie)
          </script>`
        break
      default:
        res.writeHead(404).end()
        return
    }
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
    res.end(`<!doctype html><html><head><title>Attacker</title></head><body>${body}</body></html>`)
  }
}

/** Starts the two attacker origins aimed at `app`. */
export async function startAttackers(app: string): Promise<Attackers> {
  const same = await listen(createServer(attackerPages(app)))
  const cross = await listen(createServer(attackerPages(app)))
  return {
    sameSite: `http://localhost:${(same.address() as AddressInfo).port}`,
    crossSite: `http://127.0.0.1:${(cross.address() as AddressInfo).port}`,
    close: async () => {
      await Promise.all([shut(same), shut(cross)])
    },
  }
}

async function listen(server: Server): Promise<Server> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  return server
}

function shut(server: Server): Promise<void> {
  server.closeAllConnections()
  return new Promise((resolve) => server.close(() => resolve()))
}
