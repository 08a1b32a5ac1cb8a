// A client in its own process (in the test's process the reset that loses an answer hardly ever
// happens): sends `times` POSTs to 127.0.0.1:<port>, each writing its whole body at once and going on
// writing whatever comes back, as a browser or curl sending a large form does; prints the status of
// each answer received before the connection closed, 0 for none, as a JSON array.
//   node sending-all.mjs '{"port":1234,"times":10,"headers":{...},"body":{"repeat":"...","count":1000}}'
import { connect } from 'node:net'

const { port, times, headers, body: spec } = JSON.parse(process.argv[2])
const body = Buffer.from(spec.repeat.repeat(spec.count) + (spec.tail ?? ''))

function send() {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1')
    const received = []
    socket.on('data', (chunk) => received.push(chunk))
    socket.on('error', () => {})
    socket.on('close', () => {
      const status = /^HTTP\/1\.1 (\d{3}) /.exec(Buffer.concat(received).toString('latin1'))
      resolve(status === null ? 0 : Number(status[1]))
    })
    const head = Object.entries({
      ...headers,
      host: `127.0.0.1:${port}`,
      'content-length': String(body.length),
    })
      .map(([name, value]) => `${name}: ${value}\r\n`)
      .join('')
    socket.write(`POST /act HTTP/1.1\r\n${head}\r\n`)
    socket.end(body)
  })
}

const statuses = []
for (let i = 0; i < times; i++) statuses.push(await send())
process.stdout.write(JSON.stringify(statuses))
