// Loaded by mocha (--require) before express-session's vendored suite: two of its dev dependencies,
// `after` and `cookie-parser`, are not installed in this repository, so their ids resolve to the small
// stand-ins next to this file. Nothing else is redirected.
'use strict'
const Module = require('node:module')
const { join } = require('node:path')

const STAND_INS = {
  after: join(__dirname, 'after.cjs'),
  'cookie-parser': join(__dirname, 'cookie-parser.cjs'),
}
const resolve = Module._resolveFilename
Module._resolveFilename = function resolveStandIn(request, ...rest) {
  return Object.hasOwn(STAND_INS, request) ? STAND_INS[request] : resolve.call(this, request, ...rest)
}
