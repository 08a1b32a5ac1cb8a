/**
 * "Try to attack this demo": a page on a second loopback origin (the demo's host, another port) that
 * attacks the demo the way a hostile page would, from the visitor's own browser: a cross-site form
 * post, a login CSRF, and credentialed fetches (one reading the home page and its token, one posting).
 * A page on another origin cannot read the demo's answers, so it asks its own server what the demo
 * refused: the demo notes every CSRF refusal of a request marked `?attempt=` (see app.ts).
 */
import { readFileSync } from 'node:fs'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import type { DemoApp } from './app.js'
import { escapeHtml, listen } from './app.js'

/** A CSRF refusal of a request the attack page sent, as the demo saw it. */
export interface Refusal {
  readonly path: string
  readonly status: number
  /** latchkey's `CsrfError` reason: `cross-site`, `origin-mismatch`, `missing-token`, `bad-token`. */
  readonly reason: string
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

function page(demoOrigin: string): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Try to attack the latchkey demo</title>
<script src="/attack.js" defer></script>
<style>
  body { font: 16px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; background: #fff8f6 }
  table { border-collapse: collapse; width: 100% } td, th { text-align: left; padding: .4rem .5rem; border-bottom: 1px solid #e6d6d2; vertical-align: top }
  [data-outcome="refused"] { color: #1b6b2a } [data-outcome="succeeded"], [data-outcome="no-answer"] { color: #a11 }
  .muted { color: #666; font-size: .9em } iframe { display: none }
</style>
</head>
<body data-demo="${escapeHtml(demoOrigin)}">
<h1>Try to attack this demo</h1>
<p>This page is another origin, <code id="attacker-origin"></code>, and it attacks the demo at
<code>${escapeHtml(demoOrigin)}</code> from your browser, with your cookies, the way a hostile page would.
It cannot read the demo's answers; the demo told this page's server what it refused.</p>
<table id="attacks" data-done="0">
<thead><tr><th>Attempt</th><th>Outcome</th></tr></thead>
<tbody>
<tr data-attempt="form"><td><strong>Cross-site form post</strong><div class="muted">an auto-submitted form: POST /counter, with a made-up token</div></td><td class="outcome" data-outcome="pending">running…</td></tr>
<tr data-attempt="login"><td><strong>Login CSRF</strong><div class="muted">sign you in as the attacker: POST /login, name "mallory"</div></td><td class="outcome" data-outcome="pending">running…</td></tr>
<tr data-attempt="fetch-read"><td><strong>Credentialed fetch, reading</strong><div class="muted">fetch(GET /, credentials: 'include'): your page and its CSRF token</div></td><td class="outcome" data-outcome="pending">running…</td></tr>
<tr data-attempt="fetch-post"><td><strong>Credentialed fetch, posting</strong><div class="muted">fetch(POST /logout-others, credentials: 'include', mode: 'no-cors')</div></td><td class="outcome" data-outcome="pending">running…</td></tr>
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
      const demoOrigin = `http://${hostnameOf(req, options.host)}:${options.demoPort}`
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
      // What the demo refused of this page's attempts, by the ids it chose.
      const ids = (url.searchParams.get('ids') ?? '').split(',').slice(0, 10)
      const found = Object.fromEntries(
        ids.flatMap((id) => {
          const refusal = demo.refusals.get(id)
          return refusal === undefined ? [] : [[id, refusal]]
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
