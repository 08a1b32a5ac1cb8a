/** `latchkey/stores/file`: sessions as files in a folder shared by the processes of one machine. No dependency. */
export { FileStore, type FileStoreOptions } from './file-store.js'
