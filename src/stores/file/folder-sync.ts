/**
 * Group commit of folder syncs for `FileStore` with `durability: 'power-loss'`. A rename (or link,
 * mkdir, marker) is on the disk once its folder has been `fsync`ed *after* it: a sync of the folder
 * that had already started may have missed it. One sync of a folder therefore serves every change made
 * in it before that sync started, however many: while a folder's sync runs, every change that asks
 * for one waits for the *next* sync of that folder, which starts when the running one ends and serves
 * them all at once. Folders are synced independently of each other.
 */
import { open } from 'node:fs/promises'

/** Syncs one folder (`fsync` of the directory). The seam the tests hold to order syncs by hand. */
export type SyncFolder = (dir: string) => Promise<void>

interface Folder {
  /** The sync in flight. */
  running?: Promise<void>
  /** The sync that starts when the running one ends: every change made while one runs waits for it. */
  queued?: Promise<void>
}

/** The folder syncs of one store: see the module comment. */
export class FolderSyncs {
  private readonly folders = new Map<string, Folder>()

  constructor(private readonly syncFolder: SyncFolder = fsyncFolder) {}

  /**
   * Resolves once a sync of `dir` that started after this call has completed: call it after the change
   * that must reach the disk. Rejects as that sync does (every change it served gets the same error).
   */
  after(dir: string): Promise<void> {
    let folder = this.folders.get(dir)
    if (folder === undefined) {
      folder = {}
      this.folders.set(dir, folder)
    }
    if (folder.queued) return folder.queued
    if (folder.running === undefined) return this.start(dir, folder)
    const state = folder
    const queued = folder.running.then(ignore, ignore).then(() => {
      state.queued = undefined
      return this.start(dir, state)
    })
    folder.queued = queued
    return queued
  }

  /** Folders with a sync running or queued: none once every sync has ended. */
  get busy(): number {
    return this.folders.size
  }

  private start(dir: string, folder: Folder): Promise<void> {
    let run: Promise<void>
    try {
      run = this.syncFolder(dir)
    } catch (error) {
      run = Promise.reject(error)
    }
    folder.running = run
    const settle = () => {
      if (folder.running !== run) return
      folder.running = undefined
      if (folder.queued === undefined) this.folders.delete(dir)
    }
    run.then(settle, settle)
    return run
  }
}

function ignore(): void {}

/** `fsync` of a folder; a file system that cannot sync folders (`EINVAL`, `ENOTSUP`) has nothing more to do. */
export async function fsyncFolder(dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try {
    await handle.sync()
  } catch (error) {
    const code = (error as NodeJS.ErrnoException | undefined)?.code
    if (code !== 'EINVAL' && code !== 'ENOTSUP') throw error
  } finally {
    await handle.close()
  }
}
