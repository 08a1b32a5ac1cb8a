// The attack page's script, served as /attack.js by the attack site (attack.ts). It attacks the demo
// from the visitor's browser, then asks its own server what the demo received of each request (its
// Sec-Fetch-Site, whether the session cookie came) and which it refused.
const demo = document.body.getAttribute('data-demo') ?? ''
const table = document.getElementById('attacks')
const attackerOrigin = document.getElementById('attacker-origin')
if (attackerOrigin) attackerOrigin.textContent = location.origin

/** A random id the demo notes a request under (the request carries it as ?attempt=). */
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12))
  return [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('')
}

function row(name) {
  return table?.querySelector(`[data-attempt="${name}"]`) ?? null
}

function show(name, outcome, text) {
  const cell = row(name)?.querySelector('.outcome')
  if (!cell) return
  cell.setAttribute('data-outcome', outcome)
  cell.textContent = text
}

/** What the demo received, as it told this page's server: Sec-Fetch-Site, and whether the cookie came. */
function showSent(name, seen) {
  const tr = row(name)
  const cell = tr?.querySelector('.sent')
  if (!tr || !cell) return
  tr.setAttribute('data-site', seen.site ?? 'none')
  tr.setAttribute('data-cookie', seen.cookieCame ? 'sent' : 'absent')
  cell.textContent = `Sec-Fetch-Site: ${seen.site ?? '(none)'}; ${
    seen.cookieCame ? 'with your session cookie' : 'without your session cookie'
  }`
}

/** Posts a form into a hidden frame, as a hostile page does without asking. */
function postForm(action, fields, target) {
  const form = document.createElement('form')
  form.method = 'post'
  form.action = action
  form.target = target
  for (const [name, value] of Object.entries(fields)) {
    const input = document.createElement('input')
    input.type = 'hidden'
    input.name = name
    input.value = value
    form.append(input)
  }
  document.body.append(form)
  form.submit()
}

function describe(seen) {
  const cookie = seen.cookieCame
    ? 'your session cookie came along, and still'
    : 'your session cookie stayed home (SameSite=Lax), and'
  return `Refused by the demo: ${seen.status} ${seen.reason}; ${cookie} nothing changed.`
}

const waiting = new Map() // attempt name -> id the demo notes its request under

async function run() {
  const form = newId()
  waiting.set('form', form)
  postForm(`${demo}/counter?attempt=${form}`, { _csrf: 'made-up-token' }, 'sink-form')

  const login = newId()
  waiting.set('login', login)
  postForm(`${demo}/login?attempt=${login}`, { name: 'mallory', password: 'mallory' }, 'sink-login')

  // A GET: the CSRF check lets it through, and the demo answers. What matters is who may read the answer.
  const read = newId()
  waiting.set('fetch-read', read)
  let readRefused = null
  try {
    const response = await fetch(`${demo}/?attempt=${read}`, { credentials: 'include' })
    const text = await response.text()
    show('fetch-read', 'succeeded', `Read ${text.length} characters of your page!`)
  } catch (error) {
    readRefused = error instanceof Error ? error.name : 'error'
  }

  const post = newId()
  waiting.set('fetch-post', post)
  try {
    await fetch(`${demo}/logout-others?attempt=${post}`, {
      method: 'POST',
      credentials: 'include',
      mode: 'no-cors',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: 'x=1',
    })
  } catch {
    // The demo's answer is opaque either way: its own report below says what it did.
  }

  // The demo notes each marked request it answered: poll until each attempt is accounted for.
  for (let round = 0; round < 100 && waiting.size > 0; round++) {
    const ids = [...waiting.values()].join(',')
    const found = await (await fetch(`/refusals?ids=${ids}`)).json()
    for (const [name, id] of [...waiting]) {
      const seen = found[id]
      if (!seen) continue
      waiting.delete(name)
      showSent(name, seen)
      if (name === 'fetch-read') {
        if (readRefused !== null) {
          show(
            name,
            'refused',
            `The demo answered ${seen.status}, and your browser kept the answer from this page (${readRefused}): the demo grants no CORS, so neither the page nor its CSRF token can be read.`,
          )
        }
      } else if (seen.reason !== null) {
        show(name, 'refused', describe(seen))
      } else {
        show(name, 'succeeded', `Not refused: the demo answered ${seen.status}!`)
      }
    }
    if (waiting.size > 0) await new Promise((resolve) => setTimeout(resolve, 100))
  }
  for (const name of waiting.keys()) show(name, 'no-answer', 'The demo reported nothing of this request.')
  const refused = table?.querySelectorAll('[data-outcome="refused"]').length ?? 0
  const summary = document.getElementById('summary')
  if (summary) summary.textContent = `${refused} of 4 attempts refused.`
  table?.setAttribute('data-done', '1')
}

run()
