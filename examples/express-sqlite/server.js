// latchkey with Express and SQLite, in plain JavaScript: sign in by name, a counter, sign out. Every
// form posts its CSRF token in the `_csrf` field; latchkey checks it before the route runs and refuses
// a request without it (a 403 rendered by the error handler at the end).
//
//   npm install latchkey express better-sqlite3      (in a project with "type": "module")
//   LATCHKEY_KEYS="$(npx latchkey keygen)" node server.js
//
// PORT (default 3000) and SESSIONS_DB (default sessions.db) override where it listens and stores. In a
// clone of latchkey, `npm run build` first: `latchkey` then resolves to the build (the package's name).
import express from 'express'
import { CsrfError, createSessionManager } from 'latchkey'
import { sessions } from 'latchkey/express'
import { SqliteStore } from 'latchkey/stores/sqlite'

const manager = createSessionManager({
  store: new SqliteStore({ path: process.env.SESSIONS_DB || 'sessions.db' }),
  // keys: read from LATCHKEY_KEYS (comma-separated, newest first)
})

const app = express()
app.use(sessions(manager)) // req.session in every later handler; the CSRF check on every POST
app.use(express.urlencoded({ extended: false }))

/** Text made safe to put in HTML. */
const html = (text) => String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`)

/** The hidden field every form carries: the session's CSRF token. */
const csrf = (req) => `<input type="hidden" name="_csrf" value="${html(req.session.csrfToken())}">`

app.get('/', (req, res) => {
  const user = req.session.userId // null until session.login()
  const count = req.session.get('count') ?? 0
  const body =
    user === null
      ? `<form method="post" action="/login">${csrf(req)}
  <label>Your name <input name="name" required maxlength="64"></label> <button>Sign in</button></form>`
      : `<p>Signed in as <strong id="user">${html(user)}</strong>.</p>
<form method="post" action="/count">${csrf(req)}<button>Count: <span id="count">${count}</span></button></form>
<form method="post" action="/logout">${csrf(req)}<button>Sign out</button></form>`
  res.type('html').send(`<!doctype html><title>latchkey + Express + SQLite</title>\n${body}\n`)
})

app.post('/login', (req, res) => {
  const name = String(req.body?.name ?? '').trim()
  if (name === '' || name.length > 64) return res.status(400).send('The name must be 1 to 64 characters.')
  req.session.login(name) // a new session ID; the data is kept
  res.redirect(303, '/') // the session is saved before the redirect leaves
})

app.post('/count', (req, res) => {
  if (req.session.userId === null) return res.status(403).send('Sign in first.')
  req.session.update('count', (n = 0) => n + 1) // safe under parallel requests
  res.redirect(303, '/')
})

app.post('/logout', (req, res) => {
  req.session.logout() // the stored session ends now, and the cookie is cleared
  res.redirect(303, '/')
})

app.use((err, _req, res, next) => {
  if (err instanceof CsrfError)
    return res.status(err.status).send(`Refused (${err.reason}): reload and try again.`)
  next(err) // a StoreError carries status 503: Express's own handler answers it
})

const server = app.listen(Number(process.env.PORT ?? 3000), () => {
  console.log(`listening on http://localhost:${server.address().port}`)
})
process.once('SIGTERM', () => server.close(() => manager.close()))
