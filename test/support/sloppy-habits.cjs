// express-session habits, written in sloppy-mode CommonJS (no 'use strict', loaded by Node's own
// require): where an assignment to a frozen object fails without a word, so only a trap can make it loud.

/** True: this file runs in sloppy mode (a plain call's `this` is the global object). */
exports.isSloppy = function isSloppy() {
  return (function () {
    return this !== undefined
  })()
}

/** What a sloppy assignment to a frozen object does: nothing, and no error (the reason for the traps). */
exports.assignToFrozen = function assignToFrozen() {
  const frozen = Object.freeze({})
  frozen.user = 'x'
  return frozen.user
}

exports.assignUser = function assignUser(session) {
  session.user = 'x'
}

exports.assignUserId = function assignUserId(session) {
  session.userId = 'mallory'
}

exports.deleteUser = function deleteUser(session) {
  delete session.user
}

exports.assignCookieMaxAge = function assignCookieMaxAge(session) {
  session.cookie.maxAge = 30 * 24 * 3600 * 1000
}

exports.assignCookieExpires = function assignCookieExpires(session) {
  session.cookie.expires = new Date(0)
}

/** Express routes written the express-session way. */
exports.expressRoutes = function expressRoutes(app) {
  app.get('/assign', (req, res) => {
    req.session.user = 'x'
    res.send('stored?')
  })
  app.get('/destroy', (req, res) => {
    req.session.destroy(() => res.send('destroyed'))
  })
  app.get('/regenerate', (req, res) => {
    req.session.regenerate(() => res.send('regenerated'))
  })
  app.get('/save', (req, res) => {
    req.session.save(() => res.send('saved'))
  })
  app.get('/cookie', (req, res) => {
    req.session.cookie.maxAge = 1000
    res.send('remembered?')
  })
}
