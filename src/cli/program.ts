/** The `latchkey` command line: commander wiring, output and exit codes. */
import { createRequire } from 'node:module'
import { Command, CommanderError, Option } from 'commander'
import { STORE_SCHEMES } from '../stores/index.js'
import type { ListOptions, RekeyCommandOptions, RevokeOptions } from './commands.js'
import * as commands from './commands.js'
import {
  CliError,
  EXIT,
  EXIT_CODES_HELP,
  findSecrets,
  type Io,
  jsonLine,
  Output,
  printable,
  redactor,
  type StoreCommandOptions,
} from './context.js'
import { type ImportOptions, importExpressSessions } from './import.js'

const STORE_HELP = `Store URLs (as openStore takes them; also from LATCHKEY_STORE, which keeps a password out of
the process list):
  sqlite:./var/sessions.db   sqlite:///srv/sessions.db   file:./var/sessions
  postgres://user:password@host:5432/db   mysql://user:password@host:3306/db   (mariadb:// too)
  redis://host:6379   rediss://host:6380   redis+cluster://host:7000,host:7001
Schemes: ${STORE_SCHEMES.join(' ')}
Store constructor options: --store-option tableName=app_sessions (repeatable).
Passwords in URLs are shown as *** in every message.`

const KEYS_HELP = `Keys: LATCHKEY_KEYS (comma-separated, newest first, as the application reads it), or
--keys-file PATH (keys separated by newlines or commas; # starts a comment).`

function version(): string {
  try {
    return (createRequire(import.meta.url)('../../package.json') as { version: string }).version
  } catch {
    return 'unknown'
  }
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value]
}

function positiveInteger(value: string): number {
  const number = Number(value)
  if (!Number.isSafeInteger(number) || number < 1) {
    throw new CliError(EXIT.usage, 'ERR_LATCHKEY_USAGE', `expected a positive integer, got ${value}`)
  }
  return number
}

/**
 * Runs `latchkey` with `args` (the arguments after the program name) and resolves the exit code.
 * Never rejects: every failure becomes a message and an exit code.
 */
export async function run(
  args: readonly string[],
  io: Omit<Io, 'redact'> & { redact?: Io['redact'] },
): Promise<number> {
  const context: Io = {
    ...io,
    redact: io.redact ?? redactor(findSecrets([...args, io.env.LATCHKEY_STORE])),
  }
  const json = args.includes('--json')
  const out = new Output(context, json)
  let exitCode: number = EXIT.ok
  const program = new Command('latchkey')
  program
    .description(
      'Operate latchkey session stores: keys, schema, counts, sessions, revocation, pruning, key rotation.',
    )
    .version(version(), '-V, --version')
    .exitOverride()
    .showHelpAfterError('(run with --help for usage)')
    .configureOutput({
      writeOut: (text) => context.stdout.write(context.redact(text)),
      // commander's messages quote the arguments: each line printed with its control characters escaped.
      writeErr: (text) => context.stderr.write(context.redact(text).split('\n').map(printable).join('\n')),
      outputError: (text, write) => {
        if (json) {
          const message = text.replace(/^error: /, '').trim()
          const document = { ok: false, error: { code: 'ERR_LATCHKEY_USAGE', exitCode: EXIT.usage, message } }
          context.stdout.write(`${context.redact(jsonLine(document))}\n`)
        }
        write(text)
      },
    })
    .addHelpText('after', `\n${STORE_HELP}\n\n${KEYS_HELP}\n\n${EXIT_CODES_HELP}\n`)

  const storeCommand = (name: string, description: string, options: { keys?: boolean } = {}): Command => {
    const command = program
      .command(name)
      .description(description)
      .addOption(
        new Option('--store <url>', 'the store, as a URL (see below)')
          .env('LATCHKEY_STORE')
          .makeOptionMandatory(),
      )
      .option('--store-option <name=value>', 'an option for the store constructor (repeatable)', collect, [])
      .option('--json', 'print one JSON document on stdout (errors too, with "ok": false)')
    if (options.keys) {
      command.option('--keys-file <path>', 'read the keys from this file instead of LATCHKEY_KEYS')
    }
    command.addHelpText(
      'after',
      `\n${STORE_HELP}${options.keys ? `\n\n${KEYS_HELP}` : ''}\n\n${EXIT_CODES_HELP}\n`,
    )
    return command
  }
  const action =
    <O>(task: (options: O) => Promise<number> | number) =>
    async (options: O): Promise<void> => {
      exitCode = await task(options)
    }

  program
    .command('keygen')
    .description('print a new random key (32 bytes, base64url) for LATCHKEY_KEYS, or write it to a file')
    .option('--out <file>', 'write the key to this new file, mode 0600 (never over an existing file)')
    .option('--json', 'print {"ok":true,"key":"..."} ({"ok":true,"file":"..."} with --out)')
    .addHelpText(
      'after',
      `
Start with one key: npx latchkey keygen --out .latchkey-keys, then --keys-file .latchkey-keys (or
LATCHKEY_KEYS="$(cat .latchkey-keys)" for the application). To rotate, put a new key first and keep the
old ones after it (LATCHKEY_KEYS=new,old), deploy, run \`latchkey rekey\`, then drop the old key.`,
    )
    .action(action<{ out?: string }>((options) => commands.keygen(out, options.out)))

  storeCommand(
    'migrate',
    'create or upgrade the schema of a SQL store, or set a Redis key prefix up (safe to run any number of times)',
  ).action(action<StoreCommandOptions>((options) => commands.migrate(options, out)))
  storeCommand('schema', 'print the DDL that migrate runs, without connecting to the database').action(
    action<StoreCommandOptions>((options) => commands.schema(options, out)),
  )
  storeCommand(
    'count',
    'print how many live sessions the store holds; with keys, also how many of them no key opens',
    { keys: true },
  ).action(action<StoreCommandOptions>((options) => commands.count(options, out)))
  storeCommand(
    'list',
    'list signed-in sessions: handle, user, created, last seen, device (never IDs or store keys)',
    {
      keys: true,
    },
  )
    .option('--user <id>', "only this user's sessions")
    .action(action<ListOptions>((options) => commands.list(options, out)))
  storeCommand('revoke', 'end sessions: one (by handle), every session of a user, or every session', {
    keys: true,
  })
    .option('--handle <handle>', 'the session this handle names (from `latchkey list`)')
    .option('--user <id>', 'every session of this user')
    .option('--all', 'every session in the store (signed-in and anonymous)')
    .option('--no-progress', 'no progress bar (it is drawn only on a terminal anyway)')
    .action(action<RevokeOptions>((options) => commands.revoke(options, out)))
  storeCommand('prune', 'remove expired records and tombstones now')
    .option('--no-progress', 'no progress indicator')
    .action(action<StoreCommandOptions>((options) => commands.prune(options, out)))
  storeCommand(
    'rekey',
    're-seal every session with the first key, so that older keys can be retired (resumable, safe while the application runs)',
    { keys: true },
  )
    .option('--concurrency <n>', 'records re-sealed at once (default 4)', positiveInteger)
    .option('--no-progress', 'no progress bar (it is drawn only on a terminal anyway)')
    .addHelpText(
      'before',
      `Rotation: (1) LATCHKEY_KEYS=new,old everywhere the application runs, (2) latchkey rekey with the same
keys, (3) drop the old key. Each record is re-sealed by compare-and-set: a write of the application
meanwhile is never overwritten (the record is read again and retried). Interrupt it or let it fail and
run it again: done records are skipped.
`,
    )
    .action(action<RekeyCommandOptions>((options) => commands.rekeyCommand(options, out)))

  storeCommand(
    'import-express-sessions',
    'copy the sessions of an express-session store into this latchkey store (same IDs: users stay signed in), never over a session already there',
    { keys: true },
  )
    .requiredOption(
      '--from-module <path>',
      'a JS module whose default export (or `store` export) is the express-session store instance the application uses',
    )
    .option('--delete-source', 'delete each session from the old store once it is in the latchkey store')
    .option('--concurrency <n>', 'sessions copied at once (default 8)', positiveInteger)
    .option('--no-progress', 'no progress bar (it is drawn only on a terminal anyway)')
    .addHelpText(
      'before',
      `For latchkey/express-session's move to a latchkey store (docs/express-session.md): sessions move as
they are used once the application runs with moveFrom; this copies the rest. Each copy is insert-only,
so it is safe while the application runs and safe to run again. The module may also export userOf (as
the middleware's option), all (for a store without all() or ids(), e.g. connect-pg-simple) and close.
`,
    )
    .action(action<ImportOptions>((options) => importExpressSessions(options, out)))

  try {
    await program.parseAsync(args, { from: 'user' })
    return exitCode
  } catch (error) {
    if (error instanceof CommanderError) {
      // --help and --version end here too, with exit code 0.
      if (
        error.exitCode === 0 ||
        error.code === 'commander.helpDisplayed' ||
        error.code === 'commander.version'
      ) {
        return EXIT.ok
      }
      if (error.code === 'commander.executeSubCommandAsync') return EXIT.failure
      return EXIT.usage
    }
    const extra = (error as { partial?: unknown }).partial
    return out.failure(error, extra === undefined ? {} : { partial: extra })
  }
}
