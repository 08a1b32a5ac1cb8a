/**
 * A TCP proxy on a loopback port in front of a real server, for stores whose server must go away and
 * come back during a test. While down, every connection through it (new or open) is cut at once, as
 * when the server stops; while up, bytes pass both ways untouched.
 *
 *     const proxy = await startTcpProxy(5432)   // up; proxy.port stands in for 5432
 *     proxy.down()                              // the server is gone
 *     proxy.up()                                // and back
 *
 * It can also stop answering without closing anything, as a network partition or a frozen server
 * does: while frozen, connections stay open (new ones are accepted) but no byte passes either way;
 * thawed, what was held back passes on, as TCP delivers it when a partition heals.
 *
 *     proxy.freeze()                            // silent, every connection left open
 *     proxy.thaw()                              // bytes flow again
 */

import type { AddressInfo } from 'node:net'
import { connect, createServer, type Server, type Socket } from 'node:net'

/** A running proxy. */
export interface TcpProxy {
  /** The loopback port to connect to instead of the server's. */
  readonly port: number
  /** Cuts every open connection and every new one until {@link up}. */
  down(): void
  /** Lets connections through again. */
  up(): void
  /** Stops every byte both ways, open and new connections alike, without closing any. */
  freeze(): void
  /** Lets the bytes held back by {@link freeze} through, and every later one. */
  thaw(): void
  /** Stops listening and cuts everything. */
  close(): Promise<void>
}

/** Starts a proxy on 127.0.0.1 to `targetPort` on `targetHost`, up unless `{ up: false }`. */
export async function startTcpProxy(
  targetPort: number,
  { targetHost = '127.0.0.1', up = true }: { targetHost?: string; up?: boolean } = {},
): Promise<TcpProxy> {
  let passing = up
  let frozen = false
  const open = new Set<Socket>()
  const track = (socket: Socket) => {
    open.add(socket)
    socket.on('close', () => open.delete(socket))
    socket.on('error', () => socket.destroy())
  }
  const cutAll = () => {
    for (const socket of open) socket.destroy()
  }
  const server: Server = createServer((client) => {
    track(client)
    if (!passing) {
      client.destroy()
      return
    }
    const upstream = connect(targetPort, targetHost)
    track(upstream)
    client.pipe(upstream)
    upstream.pipe(client)
    client.on('close', () => upstream.destroy())
    upstream.on('close', () => client.destroy())
    if (frozen) {
      client.pause()
      upstream.pause()
    }
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    down() {
      passing = false
      cutAll()
    },
    up() {
      passing = true
    },
    freeze() {
      frozen = true
      for (const socket of open) socket.pause()
    },
    thaw() {
      frozen = false
      for (const socket of open) socket.resume()
    },
    close: () =>
      new Promise<void>((resolve) => {
        passing = false
        cutAll()
        server.close(() => resolve())
      }),
  }
}

/** A loopback port nothing listens on (it was free a moment ago): connections to it are refused. */
export async function closedPort(): Promise<number> {
  const server = createServer()
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  await new Promise<void>((resolve) => server.close(() => resolve()))
  return port
}
