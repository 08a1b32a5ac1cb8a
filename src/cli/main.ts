#!/usr/bin/env node
/**
 * `latchkey`: the operator's command line (the package's `bin`). See `latchkey --help` and docs/cli.md.
 */
import { run } from './program.js'

const controller = new AbortController()
let interrupts = 0
const interrupt = (signal: NodeJS.Signals): void => {
  // First signal: long commands stop after the records in flight and report; a second one ends at once.
  if (++interrupts > 1) process.exit(130)
  process.stderr.write(`latchkey: ${signal}: finishing the records in flight (again to stop at once)\n`)
  controller.abort()
}
process.on('SIGINT', interrupt)
process.on('SIGTERM', interrupt)

run(process.argv.slice(2), {
  stdout: process.stdout,
  stderr: process.stderr,
  env: process.env,
  signal: controller.signal,
}).then(
  (code) => {
    process.exitCode = code
    // Every store is closed by now; a driver that still holds the event loop gets a moment, no more.
    setTimeout(() => process.exit(code), 2000).unref()
  },
  (error: unknown) => {
    process.stderr.write(`latchkey: ${String(error)}\n`)
    process.exit(1)
  },
)
