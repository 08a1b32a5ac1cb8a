/**
 * What every command shares: exit codes, errors, redaction of secrets, output (text or `--json`),
 * reading keys, opening the store.
 */
import { readFileSync, statSync } from 'node:fs'
import { ConfigError, SessionError, StoreError } from '../core/errors.js'
import { resolveOptions } from '../core/options.js'
import type { SessionStore } from '../core/store.js'
import { isClosableStore } from '../core/store.js'
import { openStore } from '../stores/index.js'
import { NO_SCHEMA } from '../stores/refusal.js'

/** The exit codes of `latchkey`, documented in `latchkey --help` and docs/cli.md. */
export const EXIT = Object.freeze({
  /** Done. */
  ok: 0,
  /** The command failed, or did nothing of what it was asked (a handle that names no live session). */
  failure: 1,
  /** Usage or configuration error: bad arguments, unknown store URL, missing keys, missing driver package. */
  usage: 2,
  /** The store did not answer, or failed while the command ran (what was done before stays done). */
  unavailable: 3,
  /** The store cannot do what was asked (`schema` of a store without a schema, `count` of a store without a count). */
  unsupported: 4,
  /** Partly done: some records could not be processed (see the message); the rest were. */
  partial: 5,
  /** Nothing there: no such table, database file, folder or Redis prefix (`ERR_LATCHKEY_NO_SCHEMA`); run `migrate`, or check the URL. */
  missing: 6,
  /** Interrupted (SIGINT/SIGTERM) after finishing the records in flight; run the command again to go on. */
  interrupted: 130,
})

/** The text of `--help` that lists the exit codes. */
export const EXIT_CODES_HELP = `Exit codes:
  0    done
  1    failed, or nothing was done (e.g. the handle names no live session)
  2    usage or configuration error (arguments, store URL, keys, a driver package not installed)
  3    the store did not answer or failed (work done before the failure stays done)
  4    the store cannot do that (capability missing, e.g. schema on Redis)
  5    partial failure: some records could not be processed, the others were
  6    no such table, database file, folder or Redis prefix: run \`latchkey migrate\`, or check the URL, tableName and prefix
  130  interrupted; run the same command again to carry on`

/** An error with the exit code it ends the process with. */
export class CliError extends Error {
  readonly exitCode: number
  /** A short machine-readable name, for `--json`. */
  readonly code: string

  constructor(exitCode: number, code: string, message: string) {
    super(message)
    this.exitCode = exitCode
    this.code = code
  }
}

/**
 * The error of a command stopped by Ctrl-C (or SIGTERM) part way: `done` says what it did, `partial` (for
 * `--json`) carries it, and running the command again carries on.
 */
export function interrupted(done: string, partial: unknown): CliError {
  return Object.assign(
    new CliError(
      EXIT.interrupted,
      'ERR_LATCHKEY_INTERRUPTED',
      `interrupted ${done}; run the command again to carry on`,
    ),
    { partial },
  )
}

/** The exit code and `--json` code of any error a command may throw. */
export function classify(error: unknown): { exitCode: number; code: string } {
  if (error instanceof CliError) return { exitCode: error.exitCode, code: error.code }
  if (error instanceof ConfigError) return { exitCode: EXIT.usage, code: error.code }
  if (error instanceof SessionError && error.code === NO_SCHEMA)
    return { exitCode: EXIT.missing, code: error.code }
  if (error instanceof StoreError) return { exitCode: EXIT.unavailable, code: error.code }
  if (error instanceof SessionError) return { exitCode: EXIT.failure, code: error.code }
  return { exitCode: EXIT.failure, code: 'ERR_LATCHKEY_CLI' }
}

/** The message of an error, and of its root cause when that says something the message does not. */
export function describeError(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error)
  let root: unknown = error
  for (let depth = 0; root instanceof Error && root.cause !== undefined && depth < 8; depth++)
    root = root.cause
  const rootMessage = root instanceof Error ? root.message : String(root)
  if (root === error || rootMessage === '' || message.includes(rootMessage)) return message || 'unknown error'
  return `${message}: ${rootMessage}`
}

/**
 * Passwords that appear in store URLs (`scheme://user:password@host`, also each node of a
 * `redis+cluster://` list): found in the arguments and the environment before anything is parsed, so
 * that no message (ours, commander's, a driver's) can show them.
 */
export function findSecrets(texts: readonly (string | undefined)[]): string[] {
  const secrets = new Set<string>()
  for (const text of texts) {
    if (text === undefined) continue
    for (const match of text.matchAll(/(?:\/\/|,)[^:/@,\s]*:([^@/,\s]+)@/g)) {
      const secret = match[1] as string
      secrets.add(secret)
      try {
        secrets.add(decodeURIComponent(secret))
      } catch {
        // Not percent-encoded: the raw form is enough.
      }
    }
  }
  return [...secrets].filter((secret) => secret !== '').sort((a, b) => b.length - a.length)
}

/** Replaces every secret in `text` with `***`. */
export type Redact = (text: string) => string

export function redactor(secrets: readonly string[]): Redact {
  if (secrets.length === 0) return (text) => text
  return (text) => secrets.reduce((out, secret) => out.split(secret).join('***'), text)
}

/**
 * `text` safe for a terminal: control characters (C0, DEL, C1 such as the one-byte CSI 0x9B) shown as
 * `\xHH` escapes, so that a crafted User-Agent or user ID, or a message a store or a driver made of what
 * it was given, cannot move the cursor or recolour the operator's screen. A line break is escaped too:
 * what is printed as one line stays one line.
 */
export function printable(text: string): string {
  return text.replace(
    // biome-ignore lint/suspicious/noControlCharactersInRegex: finding control characters is the point
    /[\u0000-\u001f\u007f-\u009f]/g,
    (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`,
  )
}

/**
 * `value` as one line of JSON that is safe for a terminal: `JSON.stringify` escapes C0 control
 * characters but writes DEL and C1 (0x7F to 0x9F) as they are, so those are escaped here (`\u009b`),
 * which parses back to the same string.
 */
export function jsonLine(value: unknown): string {
  return JSON.stringify(value).replace(
    /[\u007f-\u009f]/g,
    (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`,
  )
}

/** Where output goes, and how. Everything written passes through the redactor. */
export interface Io {
  readonly stdout: NodeJS.WritableStream & { isTTY?: boolean }
  readonly stderr: NodeJS.WritableStream & { isTTY?: boolean }
  readonly env: NodeJS.ProcessEnv
  readonly redact: Redact
  /** Aborted on SIGINT/SIGTERM: long commands stop after the records in flight. */
  readonly signal: AbortSignal
}

/** Output of one command: human text, or one JSON document on stdout with `--json`. */
export class Output {
  constructor(
    readonly io: Io,
    readonly json: boolean,
  ) {}

  /**
   * A line for the operator on stderr (progress notes, warnings); dropped with `--json` unless `always`.
   * Control characters are escaped ({@link printable}): a note may carry a user ID or a store's words.
   */
  note(text: string, always = false): void {
    if (!this.json || always) this.io.stderr.write(`${printable(this.io.redact(text))}\n`)
  }

  /**
   * The command's result: `value` as JSON (with `"ok": true`), or `text` on stdout. The text is the
   * command's to make safe (a table of several lines escapes each cell with {@link printable}).
   */
  result(value: Record<string, unknown>, text: string): void {
    if (this.json) this.io.stdout.write(`${this.io.redact(jsonLine({ ok: true, ...value }))}\n`)
    else if (text !== '') this.io.stdout.write(`${this.io.redact(text)}\n`)
  }

  /**
   * A failure: one line on stderr, and with `--json` a document with `"ok": false` on stdout. The
   * message often carries words the command did not write (a store's, a driver's, an old store's in
   * `import-express-sessions`): its control characters are escaped ({@link printable}) on stderr; the
   * JSON document keeps it as it is, JSON-escaped.
   */
  failure(error: unknown, extra: Record<string, unknown> = {}): number {
    const { exitCode, code } = classify(error)
    const message = describeError(error)
    this.io.stderr.write(`latchkey: ${printable(this.io.redact(message))}\n`)
    if (this.json) {
      const document = { ok: false, ...extra, error: { code, exitCode, message } }
      this.io.stdout.write(`${this.io.redact(jsonLine(document))}\n`)
    }
    return exitCode
  }

  /** Whether a progress bar may be drawn: stderr is a terminal and the output is not JSON. */
  get interactive(): boolean {
    return !this.json && this.io.stderr.isTTY === true
  }
}

/** Options every store command takes. */
export interface StoreCommandOptions {
  store: string
  storeOption?: string[]
  json?: boolean
  progress?: boolean
  keysFile?: string
}

/** `--store-option name=value`: numbers and booleans as such (`pruneIntervalMs=0`), the rest as text. */
export function parseStoreOptions(pairs: readonly string[] = []): Record<string, unknown> {
  const options: Record<string, unknown> = {}
  for (const pair of pairs) {
    const at = pair.indexOf('=')
    if (at <= 0)
      throw new CliError(EXIT.usage, 'ERR_LATCHKEY_USAGE', `--store-option ${pair}: expected name=value`)
    const name = pair.slice(0, at)
    const text = pair.slice(at + 1)
    options[name] =
      text === 'true' ? true : text === 'false' ? false : /^-?\d+(\.\d+)?$/.test(text) ? Number(text) : text
  }
  return options
}

/** The schemes of stores that prune on a timer: the CLI turns it off (it prunes only when asked). */
const SCHEDULED_PRUNE = /^(file|sqlite|postgres|postgresql|mysql|mariadb):/i
/**
 * The schemes of stores that create their schema on first use unless told not to (`createSchema:
 * false`): the SQL stores their table (and SQLite its file), RedisStore its prefix's marker key.
 */
const SCHEMA_SCHEMES = /^(sqlite|postgres|postgresql|mysql|mariadb|redis|rediss|redis\+cluster):/i

/**
 * How a command opens its store:
 * - `offline`: never touches it (`schema` prints DDL without connecting);
 * - `migrate`: opens without a first lookup (`migrate` reports its own failure) and may create;
 * - `existing`: checks that the store answers, and never creates anything: a missing table, SQLite
 *   file, FileStore folder or Redis prefix (no marker key, no session) is the `ERR_LATCHKEY_NO_SCHEMA`
 *   error (exit code 6), so that a typo in the URL never turns into an empty store reported as "0
 *   sessions". `--store-option createSchema=true` (`createDirectory=true`) is refused: exit code 2.
 */
export type OpenMode = 'offline' | 'migrate' | 'existing'

/** Opens the store `--store` names, as `openStore` takes it, as `mode` says. */
export async function openCliStore(options: StoreCommandOptions, mode: OpenMode): Promise<SessionStore> {
  const url = options.store
  const storeOptions = parseStoreOptions(options.storeOption)
  if (SCHEDULED_PRUNE.test(url) && !('pruneIntervalMs' in storeOptions)) storeOptions.pruneIntervalMs = 0
  if (mode === 'existing') {
    const option = /^file:/i.test(url) ? 'createDirectory' : SCHEMA_SCHEMES.test(url) ? 'createSchema' : null
    if (option !== null) {
      if (storeOptions[option] === true) {
        throw new ConfigError(
          option,
          `count, list, prune, rekey and revoke never create a store, so --store-option ${option}=true cannot apply: drop it, or run \`latchkey migrate\` first`,
        )
      }
      storeOptions[option] = false
    }
  }
  return openStore(url, { check: mode === 'existing', storeOptions })
}

/** Runs `task` with the store open (as `mode` says), and closes it whatever happens. */
export async function withStore<R>(
  options: StoreCommandOptions,
  mode: OpenMode,
  task: (store: SessionStore) => Promise<R>,
): Promise<R> {
  const store = await openCliStore(options, mode)
  try {
    return await task(store)
  } finally {
    if (isClosableStore(store)) await store.close().catch(() => {})
  }
}

/**
 * The master keys, newest first: from `--keys-file` (one or more keys separated by newlines, commas or
 * spaces; `#` starts a comment) or else from `LATCHKEY_KEYS` (comma-separated), as the application reads them.
 */
export function readKeys(options: StoreCommandOptions, out: Output): string[] {
  let keys: string[]
  let source: string
  if (options.keysFile !== undefined) {
    source = `--keys-file ${options.keysFile}`
    let text: string
    try {
      text = readFileSync(options.keysFile, 'utf8')
      const mode = statSync(options.keysFile).mode
      if ((mode & 0o077) !== 0) {
        out.note(`latchkey: warning: ${options.keysFile} is readable by other users (chmod 600 it)`, true)
      }
    } catch (error) {
      throw new CliError(
        EXIT.usage,
        'ERR_LATCHKEY_USAGE',
        `cannot read --keys-file ${options.keysFile}: ${(error as Error).message}`,
      )
    }
    keys = text
      .split('\n')
      .map((line) => line.replace(/#.*/, ''))
      .join(',')
      .split(/[\s,]+/)
  } else {
    source = 'LATCHKEY_KEYS'
    keys = (out.io.env.LATCHKEY_KEYS ?? '').split(',').map((key) => key.trim())
  }
  keys = keys.filter((key) => key !== '')
  if (keys.length === 0) {
    throw new CliError(
      EXIT.usage,
      'ERR_LATCHKEY_KEYS',
      `no keys in ${source}: set LATCHKEY_KEYS to the keys of the application (newest first) or pass --keys-file; \`latchkey keygen\` makes a key`,
    )
  }
  // Checked before the store is opened, exactly as the application checks them.
  try {
    resolveOptions({ store: NO_STORE, keys })
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error
    throw new CliError(EXIT.usage, error.code, error.message.replace(/^keys/, source))
  }
  return keys
}

/** A store that is never used: it lets {@link resolveOptions} check keys alone. */
const NO_STORE: SessionStore = {
  get: async () => null,
  create: async () => false,
  update: async () => false,
  touch: async () => {},
  destroy: async () => {},
}

/** A capability the store lacks: exit code 4. */
export function unsupported(store: SessionStore, what: string): CliError {
  return new CliError(
    EXIT.unsupported,
    'ERR_LATCHKEY_UNSUPPORTED',
    `${store.constructor.name} cannot ${what}`,
  )
}
