/**
 * What the CSRF check costs the server per request, by the body it is sent (issue 14, item 2): an
 * honest one-field form against hostile 1 MiB forms (many urlencoded fields, many multipart parts,
 * one huge field), each with a stored session's cookie and with no cookie at all; and the honest form
 * on a new connection each time, since a refusal that leaves the body unread closes its connection
 * (so each hostile request here pays for a new one). The server is
 * node:http with latchkey's node adapter (from dist/, MemoryStore) in a child process, so that only
 * its CPU is counted, not the client's; the client sends the requests one after another over one
 * keep-alive connection. Every case runs once per repeat, in an order that rotates; the server's CPU
 * time (process.cpuUsage: user + system) per request is taken around each case, and the medians of
 * the repeats are printed, with their ratio to the honest form with a cookie.
 *
 *   npm run bench:csrf                       7 repeats of 60 requests per case
 *   CSRF_BENCH_REQUESTS=50 CSRF_BENCH_REPEATS=3 npm run bench:csrf     (smoke test)
 *   CSRF_BENCH_MAX_FIELDS=100 npm run bench:csrf                        (csrf.maxFields other than the default)
 */
import { type ChildProcess, fork } from 'node:child_process'
import { Agent, request } from 'node:http'
import { type AddressInfo, connect } from 'node:net'

const REQUESTS = Number(process.env.CSRF_BENCH_REQUESTS ?? 60)
const REPEATS = Number(process.env.CSRF_BENCH_REPEATS ?? 7)
const MAX_FIELDS = process.env.CSRF_BENCH_MAX_FIELDS ? Number(process.env.CSRF_BENCH_MAX_FIELDS) : undefined
const MIB = 1_048_576

if (process.argv.includes('--server')) await serve()
else await drive()

/** The child: a latchkey app on node:http; answers `cpu` messages with its CPU time so far (µs). */
async function serve(): Promise<void> {
  const dist = new URL('../dist/', import.meta.url)
  const { createSessionManager, MemoryStore }: typeof import('../src/index.js') = await import(
    new URL('index.js', dist).href
  )
  const { withSessions }: typeof import('../src/adapters/node.js') = await import(
    new URL('adapters/node.js', dist).href
  )
  const { createServer } = await import('node:http')
  const manager = createSessionManager({
    store: new MemoryStore(),
    keys: [Buffer.alloc(32, 'latchkey-bench').toString('base64url')],
    cookie: { secure: false },
  })
  const server = createServer(
    withSessions(
      manager,
      (req, res, session) => {
        if (req.url === '/store') {
          session.set('k', 'v')
          res.end(session.csrfToken())
          return
        }
        res.end('ok')
      },
      MAX_FIELDS === undefined ? {} : { csrf: { maxFields: MAX_FIELDS } },
    ),
  )
  server.listen(0, '127.0.0.1', () => {
    process.send?.({ port: (server.address() as AddressInfo).port })
  })
  process.on('message', (message) => {
    if (message === 'cpu') {
      const { user, system } = process.cpuUsage()
      process.send?.({ cpu: user + system })
    } else if (message === 'exit') {
      server.close()
      process.exit(0)
    }
  })
}

interface Case {
  readonly name: string
  readonly type: string
  readonly body: Buffer
  readonly cookie: boolean
  /** The status the server must answer, to be sure the case measures what it says. */
  readonly status: number
  /** Each request on a new connection (the client sends `Connection: close`). */
  readonly close?: boolean
}

function urlencodedFields(bytes: number): string {
  const fields: string[] = []
  let size = 0
  for (let i = 0; size < bytes; i++) {
    const field = `f${i % 1000}=1`
    fields.push(field)
    size += field.length + 1
  }
  return fields.join('&').slice(0, bytes)
}

function multipartParts(bytes: number, boundary: string): string {
  const part = `--${boundary}\r\nContent-Disposition: form-data; name="f"\r\n\r\n1\r\n`
  const count = Math.floor((bytes - boundary.length - 6) / part.length)
  return `${part.repeat(count)}--${boundary}--\r\n`
}

function cases(token: string): Case[] {
  const urlencoded = 'application/x-www-form-urlencoded'
  const multipart = 'multipart/form-data; boundary=zz'
  const hostile: Omit<Case, 'cookie' | 'status'>[] = [
    { name: '1 MiB urlencoded, many fields', type: urlencoded, body: Buffer.from(urlencodedFields(MIB)) },
    { name: '1 MiB multipart, many parts', type: multipart, body: Buffer.from(multipartParts(MIB, 'zz')) },
    { name: '1 MiB urlencoded, one field', type: urlencoded, body: Buffer.from(`a=${'x'.repeat(MIB - 2)}`) },
  ]
  const honest: Case = {
    name: 'one-field form (the token)',
    type: urlencoded,
    body: Buffer.from(`_csrf=${token}`),
    cookie: true,
    status: 200,
  }
  return [
    honest,
    // A refusal that leaves the body unread closes the connection: the next request pays for a new one.
    { ...honest, name: 'one-field form, a new connection each', close: true },
    ...hostile.map((c) => ({ ...c, cookie: true, status: 403 })),
    ...hostile.map((c) => ({ ...c, cookie: false, status: 403 })),
  ]
}

function label(c: Case): string {
  return `${c.name}, ${c.cookie ? 'session cookie' : 'no cookie'}`
}

async function drive(): Promise<void> {
  const child: ChildProcess = fork(new URL(import.meta.url).pathname, ['--server'], {
    execArgv: ['--import', 'tsx'],
  })
  const replies: ((message: Record<string, number>) => void)[] = []
  child.on('message', (message) => replies.shift()?.(message as Record<string, number>))
  const next = () => new Promise<Record<string, number>>((resolve) => replies.push(resolve))
  const { port } = await next()
  const cpu = async () => {
    const reply = next()
    child.send('cpu')
    return (await reply).cpu as number
  }
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  // A refusal that leaves the body unread closes the connection, possibly while the body is still
  // being sent: the answer counts, and the write error that may follow it does not.
  const send = (method: string, path: string, headers: Record<string, string>, body?: Buffer) =>
    new Promise<{ status: number; text: string; cookies: string[] }>((resolve, reject) => {
      let answered = false
      const req = request({ host: '127.0.0.1', port, method, path, headers, agent }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (chunk: Buffer) => chunks.push(chunk))
        res.on('end', () => {
          answered = true
          resolve({
            status: res.statusCode ?? 0,
            text: Buffer.concat(chunks).toString(),
            cookies: res.headers['set-cookie'] ?? [],
          })
        })
      })
      req.on('error', (error) => {
        if (!answered) reject(error)
      })
      req.end(body)
    })
  // A request the server refuses and closes (`close`): on its own connection, the body written only
  // until the answer begins (as a browser stops sending), the answer read to the end. The server's
  // close may reset the connection while the body is still being sent; that is no failure, but an
  // answer that never came is.
  const sendClosing = (head: string, body: Buffer) =>
    new Promise<{ status: number }>((resolve, reject) => {
      const socket = connect(port as number, '127.0.0.1')
      const received: Buffer[] = []
      socket.on('data', (chunk: Buffer) => received.push(chunk))
      socket.on('error', () => {})
      socket.on('close', () => {
        const status = /^HTTP\/1\.1 (\d{3}) /.exec(Buffer.concat(received).toString('latin1'))
        if (status === null) reject(new Error('the server closed the connection without an answer'))
        else resolve({ status: Number(status[1]) })
      })
      socket.write(head)
      const step = 65_536
      const more = (from: number): void => {
        if (from >= body.length || received.length > 0 || socket.destroyed) return
        if (socket.write(body.subarray(from, from + step))) setImmediate(more, from + step)
        else socket.once('drain', () => more(from + step))
      }
      more(0)
    })
  const stored = await send('GET', '/store', {})
  const cookie = stored.cookies.map((raw) => raw.split(';')[0]).join('; ')
  const all = cases(stored.text)
  const samples = new Map<Case, number[]>(all.map((c) => [c, []]))
  const run = async (c: Case, count: number) => {
    const headers: Record<string, string> = {
      'content-type': c.type,
      'content-length': String(c.body.length),
      'sec-fetch-site': 'same-origin',
    }
    if (c.cookie) headers.cookie = cookie
    if (c.close) headers.connection = 'close'
    // Connection: close, so that a refusal that read the whole body also ends with the close awaited.
    const head = `POST /act HTTP/1.1\r\nhost: 127.0.0.1:${port}\r\nconnection: close\r\n${Object.entries(
      headers,
    )
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('')}\r\n`
    for (let i = 0; i < count; i++) {
      const answer =
        c.status === 403 ? await sendClosing(head, c.body) : await send('POST', '/act', headers, c.body)
      if (answer.status !== c.status)
        throw new Error(`${label(c)}: answered ${answer.status}, not ${c.status}`)
    }
  }
  for (const c of all) await run(c, Math.max(10, REQUESTS / 10))
  for (let repeat = 0; repeat < REPEATS; repeat++) {
    const order = all.map((_, i) => all[(i + repeat) % all.length] as Case)
    for (const c of order) {
      const before = await cpu()
      await run(c, REQUESTS)
      samples.get(c)?.push(((await cpu()) - before) / REQUESTS)
    }
  }
  child.send('exit')
  agent.destroy()
  const median = (values: number[]) => {
    const sorted = [...values].sort((a, b) => a - b)
    return sorted[Math.floor(sorted.length / 2)] as number
  }
  const base = median(samples.get(all[0] as Case) ?? [])
  console.log(
    `csrf.maxFields ${MAX_FIELDS ?? 'default'}; server CPU per request, µs (median of ${REPEATS} repeats of ${REQUESTS}; min–max), and the ratio to the one-field form`,
  )
  for (const c of all) {
    const values = samples.get(c) ?? []
    const m = median(values)
    console.log(
      `${label(c).padEnd(58)} ${m.toFixed(0).padStart(6)}  (${Math.min(...values).toFixed(0)}–${Math.max(...values).toFixed(0)})  ×${(m / base).toFixed(2)}`,
    )
  }
}
