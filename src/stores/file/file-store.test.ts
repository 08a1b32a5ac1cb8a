import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, test } from 'vitest'
import { defineStoreConformance } from '../../testing/conformance.js'
import { FileStore } from './index.js'

const root = mkdtempSync(join(tmpdir(), 'latchkey-file-'))
let folders = 0
const freshFolder = () => join(root, `store-${++folders}`)
afterAll(() => rmSync(root, { recursive: true, force: true }))

defineStoreConformance(
  { describe, test },
  {
    name: 'FileStore',
    createStore: (clock) => new FileStore({ directory: freshFolder(), clock }),
    createUnavailableStore(clock) {
      const file = join(root, `not-a-folder-${++folders}`)
      writeFileSync(file, '')
      return new FileStore({ directory: join(file, 'sessions'), clock })
    },
    createRecoveringStore(clock) {
      const parent = join(root, `later-${++folders}`)
      return {
        store: new FileStore({ directory: join(parent, 'sessions'), clock }),
        restore: () => mkdirSync(parent),
      }
    },
  },
)
