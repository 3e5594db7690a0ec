// sipedge console: a small vanilla-JS client of the control API. Every value from the API
// is put into the page as text (textContent, text nodes; never parsed as HTML), and the
// page is served with a Content-Security-Policy that allows only this file and style.css.
'use strict';

(() => {
  const STORE_KEY = 'sipedge.console';
  const MAX_LIST = 400;      // objects fetched per list page (20 per API call)
  const MAX_DENIALS = 500;   // rows kept on the live denials page

  let session = null;        // {id, token}
  let stopView = null;       // cleanup of the current view (aborts streams)
  let trunkNames = new Map(); // trunk_id → name, for the denials page

  const $ = (id) => document.getElementById(id);

  // el builds an element; strings and numbers become text nodes, never markup.
  function el(tag, attrs, ...kids) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
    for (const c of kids.flat()) {
      if (c === null || c === undefined || c === false) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function b64(s) {
    const bytes = new TextEncoder().encode(s);
    let bin = '';
    for (const b of bytes) bin += String.fromCharCode(b);
    return btoa(bin);
  }

  function authHeader() { return 'Basic ' + b64(session.id + ':' + session.token); }

  class APIError extends Error {
    constructor(status, msg) { super(msg); this.status = status; }
  }

  // request calls the API with the session's credentials. credentials:'omit' keeps the
  // browser from adding cookies or cached HTTP auth, and from prompting on a 401.
  async function request(method, url, body) {
    const init = { method, credentials: 'omit', cache: 'no-store', headers: { Authorization: authHeader() } };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const res = await fetch(url, init);
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch { data = null; }
    }
    if (!res.ok) {
      const msg = (data && data.error) || (res.status + ' ' + res.statusText);
      if (res.status === 401 && session) signOut('Signed out: ' + msg);
      throw new APIError(res.status, msg);
    }
    return data;
  }

  const zt = (path) => '/v1/Account/' + encodeURIComponent(session.id) + '/Zentrunk/' + path;
  const api = (method, path, body) => request(method, zt(path), body);

  async function listAll(path) {
    const out = [];
    for (let offset = 0; offset < MAX_LIST; offset += 20) {
      const page = await api('GET', path + '?limit=20&offset=' + offset);
      out.push(...(page.objects || []));
      if (!page.meta || !page.meta.next) break;
    }
    return out;
  }

  // --- chrome ---------------------------------------------------------------------

  function flash(msg, isError) {
    const f = $('flash');
    f.textContent = msg;
    f.className = 'flash' + (isError ? ' error' : '');
    f.hidden = !msg;
  }

  function guard(fn) {
    return async (ev) => {
      if (ev && ev.preventDefault) ev.preventDefault();
      try {
        await fn(ev);
      } catch (e) {
        if (!(e instanceof APIError && e.status === 401)) flash(e.message, true);
      }
    };
  }

  function badge(text, kind) { return el('span', { class: 'badge ' + kind, text }); }
  function dash(v) { return v === null || v === undefined || v === '' ? '—' : String(v); }
  function table(headers, rows, emptyText) {
    return el('table', {},
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { text: h })))),
      el('tbody', {}, rows.length ? rows : el('tr', {}, el('td', { class: 'empty', colspan: headers.length, text: emptyText }))));
  }
  function field(id, label, attrs) {
    return el('div', {}, el('label', { for: id, text: label }), el('input', Object.assign({ id, name: id }, attrs || {})));
  }
  function card(...kids) { return el('div', { class: 'card' }, ...kids); }

  // confirmButton needs two clicks within 4 s: no modal dialogs.
  function confirmButton(label, action, attrs) {
    let armed = null;
    const b = el('button', Object.assign({ type: 'button', class: 'small danger', text: label }, attrs || {}));
    b.addEventListener('click', guard(async () => {
      if (!armed) {
        b.textContent = 'Confirm ' + label.toLowerCase();
        b.classList.add('armed');
        armed = setTimeout(() => { armed = null; b.textContent = label; b.classList.remove('armed'); }, 4000);
        return;
      }
      clearTimeout(armed);
      armed = null;
      await action();
    }));
    return b;
  }

  // --- session --------------------------------------------------------------------

  function showApp() {
    $('login').hidden = true;
    $('app').hidden = false;
    $('nav').hidden = false;
    $('who').hidden = false;
    $('who-id').textContent = session.id;
    if (!location.hash || location.hash === '#') location.hash = '#/trunks';
    else route();
  }

  function signOut(msg) {
    if (stopView) { stopView(); stopView = null; }
    session = null;
    sessionStorage.removeItem(STORE_KEY);
    $('view').replaceChildren();
    $('app').hidden = true;
    $('nav').hidden = true;
    $('who').hidden = true;
    $('login').hidden = false;
    $('auth-token').value = '';
    const e = $('login-error');
    e.textContent = msg || '';
    e.hidden = !msg;
  }

  async function signIn(ev) {
    ev.preventDefault();
    const id = $('auth-id').value.trim();
    const token = $('auth-token').value;
    const errEl = $('login-error');
    errEl.hidden = true;
    session = { id, token };
    try {
      await api('GET', 'Trunk/?limit=1');
    } catch (e) {
      session = null;
      errEl.textContent = e.status === 401 ? 'Wrong auth ID or token.' : e.message;
      errEl.hidden = false;
      return;
    }
    sessionStorage.setItem(STORE_KEY, JSON.stringify(session));
    $('auth-token').value = '';
    showApp();
  }

  // --- views ----------------------------------------------------------------------

  const views = {
    trunks: viewTrunks,
    acls: viewACLs,
    acl: viewACL,
    credentials: viewCredentials,
    explain: viewExplain,
    denials: viewDenials,
    cluster: viewCluster,
  };

  async function route() {
    if (!session) return;
    if (stopView) { stopView(); stopView = null; }
    const parts = location.hash.replace(/^#\/?/, '').split('/');
    const name = views[parts[0]] ? parts[0] : 'trunks';
    for (const a of document.querySelectorAll('#nav a')) {
      a.classList.toggle('active', a.dataset.view === name || (name === 'acl' && a.dataset.view === 'acls'));
    }
    flash('');
    const root = el('div', { id: 'view-' + name, class: 'view' });
    $('view').replaceChildren(root);
    try {
      await views[name](root, parts.slice(1).map(decodeURIComponent));
    } catch (e) {
      if (!(e instanceof APIError && e.status === 401)) flash(e.message, true);
    }
    root.dataset.ready = '1';
  }

  async function viewTrunks(root) {
    const [trunks, acls, creds] = await Promise.all([listAll('Trunk/'), listAll('IPAccessControlList/'), listAll('Credential/')]);
    const aclName = new Map(acls.map((a) => [a.ipacl_uuid, a.name]));
    const credName = new Map(creds.map((c) => [c.credential_uuid, c.username]));
    const calls = await callsNow(trunks.map((t) => t.trunk_id));
    trunkNames = new Map(trunks.map((t) => [t.trunk_id, t.name]));
    const rows = trunks.map((t) => el('tr', { 'data-trunk': t.trunk_id },
      el('td', {}, el('strong', { text: t.name }), el('div', { class: 'mono id', text: t.trunk_id })),
      el('td', {}, t.trunk_status === 'enabled' ? badge('enabled', 'ok') : badge(dash(t.trunk_status), 'off'),
        ' ', badge(dash(t.trunk_direction), 'info')),
      el('td', { class: 'mono wrap', text: dash(t.trunk_domain) }),
      el('td', {}, t.ipacl_uuid ? el('a', { href: '#/acl/' + encodeURIComponent(t.ipacl_uuid), text: aclName.get(t.ipacl_uuid) || t.ipacl_uuid }) : '—'),
      el('td', { text: t.credential_uuid ? (credName.get(t.credential_uuid) || t.credential_uuid) : '—' }),
      el('td', { text: 'cps ' + (t.max_cps ? t.max_cps : '∞') + ' · concurrent ' + (t.max_concurrent ? t.max_concurrent : '∞') }),
      el('td', { class: 'num calls', text: t.trunk_id in calls ? String(calls[t.trunk_id]) : '—' })));
    root.append(card(
      el('h2', { text: 'Trunks' }),
      el('p', { class: 'sub', text: 'Calls now counts the calls holding a slot on this node (being set up or answered).' }),
      table(['Trunk', 'Status', 'Domain', 'IP ACL', 'Credential', 'Caps', 'Calls now'], rows, 'No trunks yet: create one with the API or sipedge ctl.')));
  }

  async function callsNow(ids) {
    const out = {};
    for (let i = 0; i < ids.length; i += 50) {
      const q = ids.slice(i, i + 50).map((id) => 'trunk_id=' + encodeURIComponent(id)).join('&');
      try {
        Object.assign(out, (await request('GET', '/console/api/calls?' + q)).calls || {});
      } catch (e) {
        if (e.status === 401) throw e;
      }
    }
    return out;
  }

  async function viewACLs(root) {
    const acls = await listAll('IPAccessControlList/');
    const rows = acls.map((a) => el('tr', { 'data-acl': a.ipacl_uuid },
      el('td', {}, el('a', { href: '#/acl/' + encodeURIComponent(a.ipacl_uuid), class: 'acl-link', text: a.name })),
      el('td', { class: 'mono wrap', text: (a.ip_addresses || []).join(', ') || '—' }),
      el('td', { class: 'num', text: String((a.entries || []).filter((e) => e.enabled).length) + ' / ' + String((a.entries || []).length) }),
      el('td', { text: dash(a.updated_at) })));
    const form = el('form', { id: 'acl-create', class: 'row' },
      field('acl-name', 'Name', { required: true, placeholder: 'office-pbx' }),
      field('acl-ip', 'First address or CIDR', { required: true, placeholder: '192.0.2.10', spellcheck: 'false' }),
      el('div', {}, el('button', { type: 'submit', text: 'Create IP ACL' })));
    form.addEventListener('submit', guard(async () => {
      const r = await api('POST', 'IPAccessControlList/', { name: $('acl-name').value, ip_addresses: [$('acl-ip').value.trim()] });
      location.hash = '#/acl/' + encodeURIComponent(r.ipacl_uuid);
    }));
    root.append(
      card(el('h2', { text: 'IP access control lists' }),
        table(['Name', 'Addresses', 'Enabled entries', 'Updated'], rows, 'No IP ACLs yet.')),
      card(el('h3', { text: 'New IP ACL' }), form));
  }

  async function viewACL(root, [uuid]) {
    const a = await api('GET', 'IPAccessControlList/' + encodeURIComponent(uuid) + '/');
    const path = 'IPAccessControlList/' + encodeURIComponent(uuid) + '/Entry/';
    const reload = () => route();
    const rows = (a.entries || []).map((e) => {
      const epath = path + encodeURIComponent(e.id) + '/';
      const desc = el('td', { class: 'desc', text: dash(e.description) });
      const edit = el('button', { type: 'button', class: 'small secondary', text: 'Edit description' });
      edit.addEventListener('click', () => {
        const input = el('input', { class: 'desc-input', value: e.description || '', maxlength: 255 });
        const save = el('button', { type: 'button', class: 'small', text: 'Save' });
        save.addEventListener('click', guard(async () => { await api('POST', epath, { description: input.value }); reload(); }));
        desc.replaceChildren(input, ' ', save);
        input.focus();
      });
      const toggle = el('button', { type: 'button', class: 'small secondary toggle', text: e.enabled ? 'Disable' : 'Enable' });
      toggle.addEventListener('click', guard(async () => { await api('POST', epath, { enabled: !e.enabled }); reload(); }));
      return el('tr', { 'data-ip': e.ip_address, 'data-entry': e.id, 'data-enabled': String(e.enabled) },
        el('td', { class: 'mono', text: e.ip_address }),
        desc,
        el('td', {}, e.enabled ? badge('enabled', 'ok') : badge('disabled', 'off')),
        el('td', { class: 'num', text: String(e.hit_count || 0) }),
        el('td', { text: dash(e.last_matched_at) }),
        el('td', { class: 'actions' }, toggle, edit,
          confirmButton('Delete', async () => { await api('DELETE', epath); reload(); }, { class: 'small danger delete' })));
    });
    const form = el('form', { id: 'entry-add', class: 'row' },
      field('entry-ip', 'Address or CIDR', { required: true, placeholder: '198.51.100.0/24', spellcheck: 'false' }),
      field('entry-desc', 'Description', { placeholder: 'branch office', maxlength: 255 }),
      el('div', {}, el('button', { type: 'submit', text: 'Add entry' })));
    form.addEventListener('submit', guard(async () => {
      await api('POST', path, { ip_address: $('entry-ip').value.trim(), description: $('entry-desc').value });
      reload();
    }));
    root.append(
      card(el('h2', {}, 'IP ACL ', el('span', { class: 'acl-name', text: a.name })),
        el('p', { class: 'sub mono', text: a.ipacl_uuid }),
        el('p', { class: 'sub', text: 'A disabled entry stays listed but matches nothing. Hit counts are summed over all nodes and lag by up to 10 s.' }),
        table(['Address', 'Description', 'State', 'Hits', 'Last matched', ''], rows, 'No entries: this ACL matches nothing.')),
      card(el('h3', { text: 'Add an entry' }), form),
      el('p', { class: 'row' }, el('a', { href: '#/acls', text: '← all IP ACLs' }), ' ',
        confirmButton('Delete this ACL', async () => {
          await api('DELETE', 'IPAccessControlList/' + encodeURIComponent(uuid) + '/');
          location.hash = '#/acls';
        }, { class: 'small danger delete-acl' })));
  }

  async function viewCredentials(root) {
    const creds = await listAll('Credential/');
    const rows = creds.map((c) => {
      const pw = el('input', { type: 'password', class: 'pw', placeholder: 'new password (8–128)', autocomplete: 'new-password' });
      const set = el('button', { type: 'button', class: 'small', text: 'Set password' });
      set.addEventListener('click', guard(async () => {
        await api('POST', 'Credential/' + encodeURIComponent(c.credential_uuid) + '/', { password: pw.value });
        pw.value = '';
        flash('Password of ' + c.username + ' changed.');
      }));
      return el('tr', { 'data-credential': c.credential_uuid, 'data-username': c.username },
        el('td', {}, el('strong', { text: c.name }), el('div', { class: 'mono id', text: c.credential_uuid })),
        el('td', { class: 'mono', text: c.username }),
        el('td', { class: 'mono', text: dash(c.realm) }),
        el('td', { text: dash(c.updated_at) }),
        el('td', { class: 'actions' }, pw, ' ', set));
    });
    const form = el('form', { id: 'cred-create', class: 'row' },
      field('cred-name', 'Name', { required: true, placeholder: 'roaming' }),
      field('cred-user', 'Username', { required: true, placeholder: 'pbx1', spellcheck: 'false' }),
      field('cred-pass', 'Password', { required: true, type: 'password', autocomplete: 'new-password' }),
      el('div', {}, el('button', { type: 'submit', text: 'Create credential' })));
    form.addEventListener('submit', guard(async () => {
      await api('POST', 'Credential/', { name: $('cred-name').value, username: $('cred-user').value.trim(), password: $('cred-pass').value });
      route();
    }));
    root.append(
      card(el('h2', { text: 'Digest credentials' }),
        el('p', { class: 'sub', text: 'Passwords are write-only: stored as HA1s over the realm shown, never displayed.' }),
        table(['Credential', 'Username', 'Realm', 'Updated', 'Rotate password'], rows, 'No credentials yet.')),
      card(el('h3', { text: 'New credential' }), form));
  }

  const verdictKind = { allow_ip: 'ok', challenge: 'warn', no_credential: 'bad', trunk_disabled: 'bad', none: 'off' };

  async function viewExplain(root) {
    const trunks = await listAll('Trunk/');
    const select = el('select', { id: 'explain-trunk', name: 'trunk', required: true },
      trunks.map((t) => el('option', { value: t.trunk_id, text: t.name + ' (' + t.trunk_id.slice(0, 8) + '…)' })));
    const out = el('div', { id: 'explain-result' });
    const form = el('form', { id: 'explain-form', class: 'row' },
      el('div', {}, el('label', { for: 'explain-trunk', text: 'Trunk' }), select),
      field('explain-source', 'Source IP', { required: true, placeholder: '203.0.113.7', spellcheck: 'false' }),
      field('explain-user', 'Username (optional)', { placeholder: 'pbx1', spellcheck: 'false' }),
      el('div', {}, el('button', { type: 'submit', text: 'Explain' })));
    form.addEventListener('submit', guard(async () => {
      const body = { source_ip: $('explain-source').value.trim() };
      if ($('explain-user').value.trim()) body.username = $('explain-user').value.trim();
      const r = await api('POST', 'Trunk/' + encodeURIComponent(select.value) + '/Explain/', body);
      const me = r.matched_entry;
      out.replaceChildren(card(
        el('div', { class: 'verdict' }, badge(r.verdict, verdictKind[r.verdict] || 'info'), ' ', el('span', { class: 'sip-answer', text: r.sip_response })),
        el('dl', { class: 'kv' },
          el('dt', { text: 'Why' }), el('dd', { class: 'reason', text: r.reason }),
          el('dt', { text: 'Source' }), el('dd', { class: 'mono', text: r.source_ip }),
          el('dt', { text: 'Matched entry' }), el('dd', { class: 'mono', text: me ? me.ip_address + ' (' + me.id + ')' : 'none' }),
          el('dt', { text: 'Digest required' }), el('dd', { text: r.digest_required ? 'yes' : 'no' }),
          el('dt', { text: 'Credential' }), el('dd', { class: 'mono', text: dash(r.credential_username) }),
          el('dt', { text: 'Trunks the source reaches' }), el('dd', { class: 'mono', text: (r.source_trunks || []).join(', ') || 'none' }),
          el('dt', { text: 'Snapshot version' }), el('dd', { text: String(r.snapshot_version) }))));
    }));
    root.append(card(el('h2', { text: 'Explain a verdict' }),
      el('p', { class: 'sub', text: 'Would an INVITE from this address pass the trunk, and why? Judged by the policy this node serves, with the same function as live traffic; no SIP is sent.' }),
      trunks.length ? form : el('p', { class: 'empty', text: 'No trunks to explain.' })), out);
  }

  async function viewDenials(root) {
    if (!trunkNames.size) {
      try { trunkNames = new Map((await listAll('Trunk/')).map((t) => [t.trunk_id, t.name])); } catch (e) { if (e.status === 401) throw e; }
    }
    const state = el('span', { id: 'denials-state' }, el('span', { class: 'dot' }), 'connecting…');
    const dropped = el('span', { id: 'denials-dropped' });
    const count = el('span', { id: 'denials-count', text: '0 shown' });
    const trunkSel = el('select', { id: 'filter-trunk' }, el('option', { value: '', text: 'all trunks' }),
      [...trunkNames].map(([id, name]) => el('option', { value: id, text: name })));
    const srcIn = el('input', { id: 'filter-source', placeholder: 'e.g. 203.0.113. or 203.0.113.7', spellcheck: 'false' });
    const tbody = el('tbody', { id: 'denials-body' });
    const events = [];
    const matches = (d) => (!trunkSel.value || d.trunk === trunkSel.value) &&
      (!srcIn.value.trim() || d.src.startsWith(srcIn.value.trim()) || d.src.replace(/:\d+$/, '') === srcIn.value.trim().replace(/^\[|\]$/g, ''));
    const rowOf = (d, fresh) => el('tr', { class: fresh ? 'fresh' : null, 'data-src': d.src, 'data-trunk': d.trunk, 'data-verdict': d.verdict },
      el('td', { text: d.time.replace('T', ' ').replace(/\.\d+Z$/, 'Z') }),
      el('td', { class: 'mono', text: d.src }),
      el('td', { text: d.method + (d.transport ? ' / ' + d.transport : '') }),
      el('td', { text: d.trunk ? (trunkNames.get(d.trunk) || d.trunk) : '—' }),
      el('td', {}, badge(d.verdict, 'bad')),
      el('td', { class: 'mono wrap', text: dash(d.call_id) }),
      el('td', { class: 'wrap', text: dash(d.user_agent) }),
      el('td', { class: 'mono', text: dash(d.user) }));
    const redraw = () => {
      const shown = events.filter(matches);
      tbody.replaceChildren(...shown.map((d) => rowOf(d, false)));
      count.textContent = shown.length + ' shown of ' + events.length;
    };
    trunkSel.addEventListener('change', redraw);
    srcIn.addEventListener('input', redraw);
    const add = (d) => {
      events.unshift(d);
      if (events.length > MAX_DENIALS) events.pop();
      if (matches(d)) {
        tbody.prepend(rowOf(d, true));
        while (tbody.children.length > MAX_DENIALS) tbody.lastChild.remove();
      }
      count.textContent = tbody.children.length + ' shown of ' + events.length;
    };
    const setState = (text, kind) => state.replaceChildren(el('span', { class: 'dot ' + (kind || '') }), text);

    root.append(card(
      el('h2', { text: 'Live denials' }),
      el('p', { class: 'sub', text: 'INVITEs and in-dialog requests this node refused (the sip_denied security events) for your trunks, as they happen.' }),
      el('div', { class: 'status-line' }, state, count, dropped),
      el('div', { class: 'row' },
        el('div', {}, el('label', { for: 'filter-trunk', text: 'Trunk' }), trunkSel),
        el('div', {}, el('label', { for: 'filter-source', text: 'Source' }), srcIn)),
      el('table', { id: 'denials' },
        el('thead', {}, el('tr', {}, ['Time (UTC)', 'Source', 'Method', 'Trunk', 'Verdict', 'Call-ID', 'User-Agent', 'User'].map((h) => el('th', { text: h })))),
        tbody)));

    const ctl = new AbortController();
    stream(ctl.signal, (ev, data) => {
      if (ev === 'denial') add(data);
      else if (ev === 'ready') setState('live', 'live');
      else if (ev === 'dropped') dropped.textContent = data.dropped + ' missed (slow connection)';
    }, setState);
    return () => ctl.abort();
  }

  // stream reads the server-sent events of /console/api/denials with fetch(), so the
  // Authorization header can be sent (EventSource cannot), and reconnects after 2 s.
  async function stream(signal, onEvent, setState) {
    while (!signal.aborted && session) {
      try {
        const res = await fetch('/console/api/denials', { credentials: 'omit', cache: 'no-store', signal, headers: { Authorization: authHeader(), Accept: 'text/event-stream' } });
        if (res.status === 401) { signOut('Signed out: the credentials were refused.'); return; }
        if (!res.ok) throw new Error('HTTP ' + res.status);
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let i;
          while ((i = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            let ev = 'message';
            let data = '';
            for (const line of block.split('\n')) {
              if (line.startsWith('event: ')) ev = line.slice(7);
              else if (line.startsWith('data: ')) data += line.slice(6);
            }
            if (data) {
              try { onEvent(ev, JSON.parse(data)); } catch { /* ignore a bad event */ }
            }
          }
          if (buf.length > 1 << 20) throw new Error('event too large');
        }
        setState('reconnecting…', 'down');
      } catch (e) {
        if (signal.aborted) return;
        setState('disconnected (' + e.message + '), retrying…', 'down');
      }
      await new Promise((r) => setTimeout(r, 2000));
    }
  }
  // The denials view returns its cleanup; wrap so route() keeps it.
  const denialsView = views.denials;
  views.denials = async (root, args) => { stopView = await denialsView(root, args); };

  async function viewCluster(root) {
    const c = await request('GET', '/v1/Cluster/');
    let served = null;
    try { served = await request('GET', '/v1/Cluster/Version/' + encodeURIComponent(c.data_version) + '/'); } catch (e) { if (e.status === 401) throw e; }
    const rows = (c.nodes || []).map((n) => {
      const ok = n.applied_version >= c.data_version && n.epoch === c.data_epoch;
      return el('tr', { 'data-node': n.node_id },
        el('td', { class: 'mono', text: n.node_id }),
        el('td', { class: 'mono', text: dash(n.address) }),
        el('td', { class: 'num', text: String(n.applied_version) }),
        el('td', {}, ok ? badge('current', 'ok') : badge('behind', 'warn')),
        el('td', { text: dash(n.applied_at) }),
        el('td', { text: dash(n.started_at) }));
    });
    root.append(
      card(el('h2', { text: 'Cluster' }),
        el('div', { class: 'served', id: 'served-by', text: served ? served.message : 'served by ? of ' + c.live_nodes + ' live nodes' }),
        el('p', { class: 'sub', text: 'Data-set version ' + c.data_version + (c.data_epoch ? ' (epoch ' + c.data_epoch + ')' : '') + ' · ' + c.live_nodes + ' live node(s)' })),
      card(el('h3', { text: 'Nodes' }),
        table(['Node', 'SIP address', 'Applied version', 'Serves current', 'Applied at', 'Started at'], rows, 'No live nodes.')));
  }

  // --- start ----------------------------------------------------------------------

  document.addEventListener('DOMContentLoaded', () => {
    $('login-form').addEventListener('submit', signIn);
    $('logout').addEventListener('click', () => signOut(''));
    window.addEventListener('hashchange', route);
    try { session = JSON.parse(sessionStorage.getItem(STORE_KEY) || 'null'); } catch { session = null; }
    if (session && session.id && session.token) showApp();
    else { session = null; $('auth-id').focus(); }
  });
})();
