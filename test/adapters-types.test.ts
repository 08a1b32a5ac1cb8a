/**
 * The typing of `req.session` (by latchkey/express, and still by latchkey/express/augment), checked by
 * the TypeScript compiler on programs of their own: a global augmentation cannot be tried in the
 * project's program, which imports express-session (it types `req.session` too). Each source must compile without an error;
 * its `@ts-expect-error` lines are the errors it must have.
 */
import { fileURLToPath } from 'node:url'
import ts from 'typescript'
import { expect, test } from 'vitest'

const root = fileURLToPath(new URL('..', import.meta.url))
/** Parsed files (lib, node, express types, the sources) shared by the programs. */
const parsed = new Map<string, ts.SourceFile | undefined>()

/** The diagnostics of a program made of `source` alone (as `test/virtual.ts`), with the project's options. */
function diagnosticsOf(source: string): string[] {
  const config = ts.getParsedCommandLineOfConfigFile(
    `${root}tsconfig.json`,
    {},
    {
      ...ts.sys,
      onUnRecoverableConfigFileDiagnostic: () => {},
    },
  )
  if (!config) throw new Error('tsconfig.json did not parse')
  const file = `${root}test/virtual.ts`
  const host = ts.createCompilerHost({ ...config.options, noEmit: true })
  const { getSourceFile, fileExists, readFile } = host
  host.fileExists = (name) => name === file || fileExists(name)
  host.readFile = (name) => (name === file ? source : readFile(name))
  host.getSourceFile = (name, language, ...rest) => {
    if (name === file) return ts.createSourceFile(name, source, language)
    if (!parsed.has(name)) parsed.set(name, getSourceFile(name, language, ...rest))
    return parsed.get(name)
  }
  const program = ts.createProgram([file], { ...config.options, noEmit: true }, host)
  // Only the virtual file is checked (the rest of the project is checked by `npm run typecheck`).
  const checked = program.getSourceFile(file)
  const diagnostics = [
    ...program.getSyntacticDiagnostics(checked),
    ...program.getSemanticDiagnostics(checked),
  ]
  return diagnostics.map((diagnostic) => {
    const line =
      diagnostic.start === undefined
        ? 0
        : (checked?.getLineAndCharacterOfPosition(diagnostic.start).line ?? 0)
    return `line ${line + 1}: ${ts.flattenDiagnosticMessageText(diagnostic.messageText, ' ')}`
  })
}

const prelude = `
import express from 'express'
import { sessions } from '../src/adapters/express.js'
import { createSessionManager, MemoryStore } from '../src/index.js'
const manager = createSessionManager<{ cart: string[] }>({ store: new MemoryStore() })
`

test('importing latchkey/express types req.session on every request, its data declared once', () => {
  const source = `${prelude}
declare module '../src/adapters/express.js' {
  interface ExpressSessionData { cart: string[] }
}
express().use(sessions(manager)).get('/', (req, res) => {
  const cart: string[] | undefined = req.session.get('cart')
  // @ts-expect-error a value of the wrong type
  req.session.set('cart', 'apples')
  res.json({ cart, user: req.session.userId })
})
`
  expect(diagnosticsOf(source)).toEqual([])
})

test('latchkey/express/augment still types req.session, as it did before latchkey/express did', () => {
  const source = `${prelude}
import '../src/adapters/express-augment.js'
declare module '../src/adapters/express-augment.js' {
  interface ExpressSessionData { cart: string[] }
}
express().use(sessions(manager)).get('/', (req, res) => {
  const cart: string[] | undefined = req.session.get('cart')
  req.session.set('cart', ['apples'])
  // @ts-expect-error a value of the wrong type
  req.session.set('cart', 'apples')
  res.json({ cart, user: req.session.userId })
})
`
  expect(diagnosticsOf(source)).toEqual([])
})
