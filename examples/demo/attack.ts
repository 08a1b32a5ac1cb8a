/**
 * "Try to attack this demo": a page on another site, served on the other loopback name (the demo at
 * http://127.0.0.1:3000 has it at http://localhost:3001, and the demo opened as localhost links to
 * 127.0.0.1), which attacks the demo the way a hostile page would, from the visitor's own browser: a
 * forged form post, a login CSRF, and credentialed fetches (one reading the home page and its token,
 * one posting). `localhost` and `127.0.0.1` are two sites to a browser, and both are potentially
 * trustworthy origins, where `Secure` and `__Host-` cookies work over plain HTTP.
 * A page on another site cannot read the demo's answers, so it asks its own server what the demo saw:
 * the demo notes every request marked `?attempt=` (its `Sec-Fetch-Site`, whether the session cookie
 * came, its status, and the CSRF refusal's reason, see app.ts).
 */
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { DemoApp } from './app.js'
import { escapeHtml, listen } from './app.js'

/** What the demo saw of a request the attack page sent (marked `?attempt=`), once it answered it. */
export interface Seen {
  readonly path: string
  /** The status of the demo's answer. */
  readonly status: number
  /** latchkey's `CsrfError` reason (`cross-site`, `origin-mismatch`, ...), or `null` when not refused. */
  readonly reason: string | null
  /** `Sec-Fetch-Site` as the browser sent it. */
  readonly site: string | null
  /** Whether the request carried the session cookie. */
  readonly cookieCame: boolean
}

/** The running attack page. */
export interface AttackServer {
  readonly port: number
  close(): Promise<void>
}

const ATTACK_SCRIPT = readFileSync(new URL('./attack-page.js', import.meta.url), 'utf8')
const HOSTNAME = /^(localhost|[0-9.]+|\[[0-9a-f:.]+\])$/i

/** The hostname the browser used (its `Host` header), when it is a loopback name; else `fallback`. */
function hostnameOf(req: IncomingMessage, fallback: string): string {
  const host = req.headers.host ?? ''
  const name = host.replace(/:\d+$/, '')
  return HOSTNAME.test(name) ? name : fallback
}

/**
 * The other name of this machine, another site to a browser: `localhost` for `127.0.0.1` (or `::1`),
 * `127.0.0.1` for `localhost`. Any other name is returned as it is (the attack page is then only
 * another origin, and tells what the browser sent all the same).
 */
export function otherLoopbackName(hostname: string): string {
  const name = hostname.toLowerCase()
  if (name === 'localhost') return '127.0.0.1'
  if (name === '127.0.0.1' || name === '::1' || name === '[::1]') return 'localhost'
  return hostname
}

function page(demoOrigin: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Try to attack the latchkey demo</title>
<script src="/attack.js" defer></script>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; background: #fff8f6 }
  table { border-collapse: collapse; width: 100% } td, th { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #e6d6d2; vertical-align: top }
  [data-outcome="refused"] { color: #1b6b2a } [data-outcome="succeeded"], [data-outcome="no-answer"] { color: #a11 }
  .muted { color: #666; font-size: .9em } iframe { display: none } code { overflow-wrap: anywhere }
</style>
</head>
<body data-demo="${escapeHtml(demoOrigin)}">
<h1>Try to attack this demo</h1>
<p>This page is <code id="attacker-origin"></code>: another site than the demo at
<code>${escapeHtml(demoOrigin)}</code> (another host name), as a hostile page is. It attacks the demo from
your browser, the way such a page would. It cannot read the demo's answers; the demo told this page's
server what it received and what it did.</p>
<table id="attacks" data-done="0">
<thead><tr><th>Attempt</th><th>What the demo received</th><th>Outcome</th></tr></thead>
<tbody>
<tr data-attempt="form"><td><strong>Forged form post</strong><div class="muted">an auto-submitted form: POST /counter, with a made-up token</div></td><td class="sent">…</td><td class="outcome" data-outcome="pending">running…</td></tr>
<tr data-attempt="login"><td><strong>Login CSRF</strong><div class="muted">sign you in as the attacker: POST /login, name "mallory"</div></td><td class="sent">…</td><td class="outcome" data-outcome="pending">running…</td></tr>
<tr data-attempt="fetch-read"><td><strong>Credentialed fetch, reading</strong><div class="muted">fetch(GET /, credentials: 'include'): your page and its CSRF token</div></td><td class="sent">…</td><td class="outcome" data-outcome="pending">running…</td></tr>
<tr data-attempt="fetch-post"><td><strong>Credentialed fetch, posting</strong><div class="muted">fetch(POST /logout-others, credentials: 'include', mode: 'no-cors')</div></td><td class="sent">…</td><td class="outcome" data-outcome="pending">running…</td></tr>
</tbody>
</table>
<p id="summary" class="muted"></p>
<p><a href="${escapeHtml(demoOrigin)}/">Back to the demo</a>: your counter, your session and your devices are as they were.</p>
<iframe name="sink-form" title="form post"></iframe><iframe name="sink-login" title="login post"></iframe>
</body>
</html>
`
}

/** Starts the attack page for `demo` on `port` (0: a free one). */
export async function startAttackServer(
  demo: DemoApp,
  options: { host: string; port: number; demoPort: number },
): Promise<AttackServer> {
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://attack.invalid')
    const headers = { 'X-Content-Type-Options': 'nosniff', 'Cache-Control': 'no-store' }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { ...headers, Allow: 'GET' }).end()
      return
    }
    if (url.pathname === '/') {
      // The demo as this browser knows it: at the other loopback name, another site than this page's.
      const demoOrigin = `http://${otherLoopbackName(hostnameOf(req, options.host))}:${options.demoPort}`
      res
        .writeHead(200, {
          ...headers,
          'Content-Type': 'text/html; charset=utf-8',
          'Content-Security-Policy': `default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self' ${demoOrigin}; form-action ${demoOrigin}; frame-src ${demoOrigin}; base-uri 'none'`,
        })
        .end(page(demoOrigin))
    } else if (url.pathname === '/attack.js') {
      res.writeHead(200, { ...headers, 'Content-Type': 'text/javascript; charset=utf-8' }).end(ATTACK_SCRIPT)
    } else if (url.pathname === '/refusals') {
      // What the demo saw of this page's attempts it has answered, and what it refused, by the ids it chose.
      const ids = (url.searchParams.get('ids') ?? '').split(',').slice(0, 10)
      const found = Object.fromEntries(
        ids.flatMap((id) => {
          const seen = demo.attempts.get(id)
          if (seen === undefined || seen.status === null) return []
          return [[id, { ...seen, status: seen.status } satisfies Seen]]
        }),
      )
      res.writeHead(200, { ...headers, 'Content-Type': 'application/json' }).end(JSON.stringify(found))
    } else if (url.pathname === '/favicon.ico') {
      res.writeHead(204, headers).end()
    } else {
      res.writeHead(404, { ...headers, 'Content-Type': 'text/plain' }).end('Not found')
    }
  })
  await listen(server, options.port, options.host)
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}
