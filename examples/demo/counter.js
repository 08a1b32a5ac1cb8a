// The demo's one script, served as /counter.js: the "+1 with fetch" button. It sends the CSRF token the
// page carries in <meta name="csrf-token"> in the x-csrf-token header; the form beside it sends its own
// token in the _csrf field instead. Either way, a POST without a valid token is refused with 403.
const button = document.getElementById('fetch-increment')
const count = document.getElementById('count')
const status = document.getElementById('fetch-status')
const token = document.querySelector('meta[name="csrf-token"]')?.getAttribute('content') ?? ''

button?.addEventListener('click', async () => {
  if (status) status.textContent = ''
  try {
    const response = await fetch('/counter', {
      method: 'POST',
      headers: { 'x-csrf-token': token, accept: 'application/json' },
    })
    const type = response.headers.get('content-type') ?? ''
    const body = type.includes('application/json') ? await response.json() : {}
    if (!response.ok) throw new Error(body.error ?? `HTTP ${response.status}`)
    if (count) count.textContent = String(body.count)
    if (status) status.textContent = 'sent with fetch and the x-csrf-token header'
  } catch (error) {
    if (status) status.textContent = `Failed: ${error instanceof Error ? error.message : String(error)}`
  }
})

// Chromium's back/forward cache keeps even no-store pages: after "Sign out", Back would show this page,
// signed in, without asking the server. A page restored from that cache reloads, and the server answers
// for the browser as it is now.
addEventListener('pageshow', (event) => {
  if (event.persisted) location.reload()
})
