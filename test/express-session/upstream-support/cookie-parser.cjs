// Stand-in for `cookie-parser` (1.4) as express-session's tests use it: req.cookies from the Cookie
// header; with a secret, `s:`-signed values whose signature holds move to req.signedCookies (one that
// does not hold becomes false there).
'use strict'
const { parse } = require('cookie')
const { unsign } = require('cookie-signature')

module.exports = function cookieParser(secret) {
  return function parseCookies(req, _res, next) {
    req.secret = secret
    req.cookies = req.headers.cookie ? parse(req.headers.cookie) : {}
    req.signedCookies = {}
    if (secret) {
      for (const [name, value] of Object.entries(req.cookies)) {
        if (!value.startsWith('s:')) continue
        req.signedCookies[name] = unsign(value.slice(2), secret)
        delete req.cookies[name]
      }
    }
    next()
  }
}
