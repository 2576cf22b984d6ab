// Lambent's services for Node.js functions (no dependencies):
//
//   const lambent = require('lambent');
//   await lambent.kv.put('profiles', 'alice', { plan: 'pro' });   // -> revision
//   await lambent.kv.get('profiles', 'alice');                     // value or undefined
//   await lambent.kv.cas('profiles', 'alice', value, revision);    // throws (code 'conflict') if stale
//   await lambent.kv.delete('profiles', 'alice');
//   await lambent.kv.list('profiles', 'a');
//   await lambent.events.publish('order_placed', { id: 7 });       // -> the event's id
//
// A function may use only what its grants name (`--grant kv:NS`, `--grant publish:TYPE`).
'use strict';
const http = require('http');

function request(method, path, body, query) {
  const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
  let url = '/lambent/v1' + path;
  const q = Object.entries(query || {}).filter(([, v]) => v !== undefined && v !== null);
  if (q.length) url += '?' + new URLSearchParams(q.map(([k, v]) => [k, String(v)])).toString();
  const data = body === undefined ? undefined : JSON.stringify(body);
  const headers = { authorization: 'Bearer ' + (process.env.LAMBENT_API_TOKEN || '') };
  if (data !== undefined) {
    headers['content-type'] = 'application/json';
    headers['content-length'] = Buffer.byteLength(data);
  }
  return new Promise((resolve, reject) => {
    const req = http.request({ host, port, method, path: url, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks).toString();
        const answer = raw ? JSON.parse(raw) : null;
        if (res.statusCode >= 400) {
          const e = (answer && answer.error) || {};
          const err = new Error(e.message || raw);
          err.status = res.statusCode;
          err.code = e.code;
          reject(err);
        } else {
          resolve({ status: res.statusCode, body: answer });
        }
      });
    });
    req.on('error', reject);
    if (data !== undefined) req.write(data);
    req.end();
  });
}

const key = (ns, k) => `/kv/${encodeURIComponent(ns)}/${k.split('/').map(encodeURIComponent).join('/')}`;
const absent = (e) => { if (e.status === 404) return undefined; throw e; };

exports.kv = {
  entry: (ns, k) => request('GET', key(ns, k)).then((r) => r.body, absent),
  get: (ns, k) => request('GET', key(ns, k)).then((r) => r.body.value, absent),
  put: (ns, k, value, ttl) => request('PUT', key(ns, k), value, { ttl }).then((r) => r.body.revision),
  cas: (ns, k, value, revision, ttl) =>
    request('PUT', key(ns, k), value, { ttl, if_revision: revision }).then((r) => r.body.revision),
  delete: (ns, k, revision) =>
    request('DELETE', key(ns, k), undefined, { if_revision: revision }).then((r) => r.body.revision, absent),
  list: (ns, prefix) =>
    request('GET', `/kv/${encodeURIComponent(ns)}`, undefined, { prefix: prefix || '' }).then((r) => r.body.keys),
};

exports.events = {
  publish: (type, data, options) => {
    const event = Object.assign({ type }, options || {});
    if (data !== undefined) event.data = data;
    return request('POST', '/events', event).then((r) => r.body.id);
  },
};
