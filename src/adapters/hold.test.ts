/**
 * The hold's backpressure, on a real node:http response: a held write says wait past the response's
 * high-water mark, the writer gets one 'drain' once the hold opens (node's own, or the hold's when the
 * replayed writes did not fill node's buffer), and a failed commit lets it go by 'close'. The adapter
 * conformance suite streams through every front door; this pins the hold's own part of it.
 */
import type { ServerResponse } from 'node:http'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { expect, test } from 'vitest'
import type { CommitResult } from '../core/manager.js'
import type { Committer } from './hold.js'
import { holdUntilCommitted } from './hold.js'
import { sendFailure } from './kernel.js'

const COMMITTED: CommitResult = { setCookie: 'sid=a', private: true }

/** What one held response did: its writes' answers, its 'drain's, whether it closed or was stuck. */
interface Seen {
  writes: boolean[]
  drains: number
  closed: boolean
  /** The writer still waited for 'drain' long after the commit settled (ended for it then). */
  stuck: boolean
}

async function turns(count: number): Promise<void> {
  for (let turn = 0; turn < count; turn++) await new Promise((resolve) => setImmediate(resolve))
}

/**
 * Serves one request: holds the response for a commit the test settles with `settle`, writes
 * `chunks` into it while held, ends it once the hold lets the writer go.
 */
async function heldResponse(
  chunks: readonly Buffer[],
  settle: (commit: { resolve(result: CommitResult): void; reject(error: Error): void }) => void,
  wrap: (res: ServerResponse) => void = () => {},
): Promise<{ seen: Seen; status: number; body: string; headers: Headers }> {
  const seen: Seen = { writes: [], drains: 0, closed: false, stuck: false }
  let committed: Promise<unknown> = Promise.resolve()
  const committer: Committer<null> = {
    commit: () => {
      const commit = new Promise<CommitResult>((resolve, reject) => settle({ resolve, reject }))
      committed = commit.catch(() => {})
      return commit
    },
    fail: (res, error) => sendFailure(res, error),
  }
  const server = createServer((_req, res) => {
    wrap(res)
    res.on('drain', () => {
      seen.drains++
    })
    res.once('close', () => {
      seen.closed = true
    })
    holdUntilCommitted(res, null, committer)
    for (const chunk of chunks) seen.writes.push(res.write(chunk))
    let waiting = seen.writes.includes(false)
    const go = () => {
      waiting = false
      res.off('close', go)
      res.end()
    }
    if (!waiting) go()
    else {
      res.once('drain', go)
      res.once('close', go)
      void committed.then(async () => {
        await turns(20)
        if (!waiting) return
        seen.stuck = true
        res.off('drain', go)
        go()
      })
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  try {
    const { port } = server.address() as AddressInfo
    const response = await fetch(`http://127.0.0.1:${port}/`)
    const body = await response.text()
    // Let a late (second) 'drain' or the 'close' come, if any would.
    await turns(20)
    return { seen, status: response.status, body, headers: response.headers }
  } finally {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  }
}

const chunk = (fill: string) => Buffer.alloc(8 * 1024, fill)

test('a held write says wait from the one that reaches the high-water mark; node drains it once', async () => {
  const answer = await heldResponse([chunk('a'), chunk('b'), chunk('c')], (commit) => {
    setImmediate(() => commit.resolve(COMMITTED))
  })
  // 16 KiB held of node's 16 KiB (Node 20): the second write reaches the mark.
  expect(answer.seen.writes).toEqual([true, false, false])
  expect(answer.status).toBe(200)
  expect(answer.headers.get('set-cookie')).toBe('sid=a')
  expect(answer.body).toBe('a'.repeat(8192) + 'b'.repeat(8192) + 'c'.repeat(8192))
  expect(answer.seen.stuck).toBe(false)
  expect(answer.seen.drains).toBe(1)
})

test("the hold emits the 'drain' itself when the replayed writes all went through", async () => {
  // A wrapper that keeps the body until end() (as one computing a Content-Length would): its write
  // says go on, so node owes no 'drain', and the hold's writer would wait forever without the hold's.
  const keepUntilEnd = (res: ServerResponse) => {
    const parts: Buffer[] = []
    const end = res.end.bind(res)
    res.write = ((part: Buffer) => {
      parts.push(part)
      return true
    }) as ServerResponse['write']
    res.end = (() => end(Buffer.concat(parts))) as ServerResponse['end']
  }
  const answer = await heldResponse(
    [chunk('a'), chunk('b')],
    (commit) => setImmediate(() => commit.resolve(COMMITTED)),
    keepUntilEnd,
  )
  expect(answer.seen.writes).toEqual([true, false])
  expect(answer.body).toBe('a'.repeat(8192) + 'b'.repeat(8192))
  expect(answer.seen.stuck).toBe(false)
  expect(answer.seen.drains).toBe(1)
})

test("a failed commit lets a writer told to wait go by 'close', with no 'drain'", async () => {
  const answer = await heldResponse([chunk('a'), chunk('b')], (commit) => {
    setImmediate(() => commit.reject(new Error('store down')))
  })
  expect(answer.seen.writes).toEqual([true, false])
  expect(answer.status).toBe(500)
  expect(answer.body).not.toContain('a'.repeat(8192))
  expect(answer.seen.closed).toBe(true)
  expect(answer.seen.stuck).toBe(false)
  expect(answer.seen.drains).toBe(0)
})
