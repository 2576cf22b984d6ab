// Lambent's Node.js bootstrap: the AWS Lambda Runtime API client loop, no dependencies.
// Loads the handler named by _HANDLER ("module.function") from LAMBDA_TASK_ROOT and
// answers invocations with its result (a value, a promise, or a callback's result).
//
// In a sandbox, a spare may start it before its function is known, with
// LAMBENT_PRESTART_FD naming a socket: it loads what it needs, then waits there for its
// assignment (environment and working directory; the sandbox fenced it before it was
// executed and sets its limits) before it reads any of the function's settings or code.
'use strict';
const http = require('http');
const path = require('path');
const fs = require('fs');
const Module = require('module');
const { pathToFileURL } = require('url');

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const BASE = '/2018-06-01/runtime';
let host;
let port;

// While a pre-started runtime waits: the first HTTP exchange and the first module
// load cost ~5 ms of lazy set-up in Node, so pay them now, with an exchange with itself
// over an abstract Unix socket (its sandbox's own) and the bundled module. Nothing of a
// function is involved; a failure only leaves the cost to the cold start.
async function warmUp() {
  try {
    require(path.join(__dirname, 'lib', 'lambent.js'));
    const name = `\0lambent-warm-up-${process.pid}`;
    const server = http.createServer((req, res) => {
      req.on('data', () => {});
      req.on('end', () => {
        res.setHeader('Content-Type', 'application/json');
        res.end('{}');
      });
    });
    await new Promise((resolve, reject) => server.once('error', reject).listen(name, resolve));
    const own = new http.Agent({ keepAlive: true, maxSockets: 1 });
    for (const method of ['GET', 'POST']) {
      await new Promise((resolve, reject) => {
        const req = http.request(
          { socketPath: name, method, path: BASE + '/warm-up', agent: own, headers: { 'Content-Type': 'application/json' } },
          (res) => {
            const chunks = [];
            res.on('data', (c) => chunks.push(c));
            res.on('end', () => resolve(JSON.parse(Buffer.concat(chunks).toString('utf8'))));
          },
        );
        req.on('error', reject);
        if (method === 'POST') req.write(JSON.stringify({ warm: true }));
        req.end();
      });
    }
    own.destroy();
    await new Promise((resolve) => server.close(resolve));
  } catch (_) {
    // Only slower.
  }
}

function takeAssignment(fd) {
  fs.writeSync(fd, Buffer.from([1])); // started: the sandbox may finish its root now
  const buf = Buffer.alloc(1 << 20);
  // One datagram: the whole assignment (the socket is a SOCK_SEQPACKET pair).
  const n = fs.readSync(fd, buf, 0, buf.length, null);
  fs.closeSync(fd);
  if (n === 0) process.exit(0); // the sandbox went away unused
  const assignment = JSON.parse(buf.toString('utf8', 0, n));
  process.chdir(assignment.cwd);
  const env = new Map();
  for (const [name, value] of assignment.env) {
    if (!env.has(name)) env.set(name, value); // the first wins, as for an executed program
  }
  for (const name of Object.keys(process.env)) {
    if (!env.has(name)) delete process.env[name];
  }
  for (const [name, value] of env) {
    if (process.env[name] !== value) process.env[name] = value;
  }
  // NODE_PATH was read as Node started: read it again.
  Module._initPaths();
}

function request(method, urlPath, body, headers) {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host, port: Number(port), method, path: BASE + urlPath, agent, headers: headers || {} },
      (res) => {
        const chunks = [];
        res.on('data', (c) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }));
      },
    );
    req.on('error', reject);
    if (body !== undefined) req.write(body);
    req.end();
  });
}

function errorBody(err, requestId) {
  const e = err instanceof Error ? err : new Error(String(err));
  const body = {
    errorType: e.name || 'Error',
    errorMessage: e.message,
    stackTrace: (e.stack || '').split('\n').slice(1).map((l) => l.trim()),
  };
  if (requestId) body.requestId = requestId;
  console.error(`[ERROR] ${body.errorType}: ${body.errorMessage}\n${e.stack || ''}`);
  return JSON.stringify(body);
}

async function loadHandler() {
  const spec = process.env._HANDLER || '';
  const dot = spec.lastIndexOf('.');
  const moduleName = dot > 0 ? spec.slice(0, dot) : '';
  const fnName = dot > 0 ? spec.slice(dot + 1) : '';
  const root = process.env.LAMBDA_TASK_ROOT || process.cwd();
  try {
    if (!moduleName) throw new Error(`Bad handler '${spec}': expected module.function`);
    const base = path.resolve(root, moduleName);
    let mod;
    if (fs.existsSync(base + '.mjs')) {
      mod = await import(pathToFileURL(base + '.mjs').href);
    } else {
      mod = require(base);
    }
    const handler = mod[fnName] || (mod.default && mod.default[fnName]);
    if (typeof handler !== 'function') {
      const err = new Error(`${moduleName}.${fnName} is undefined or not exported`);
      err.name = 'Runtime.HandlerNotFound';
      throw err;
    }
    return handler;
  } catch (err) {
    const body = JSON.parse(errorBody(err));
    if (body.errorType !== 'Runtime.HandlerNotFound') body.errorType = 'Runtime.ImportModuleError';
    await request('POST', '/init/error', JSON.stringify(body), {
      'Content-Type': 'application/json',
      'Lambda-Runtime-Function-Error-Type': body.errorType,
    });
    process.exit(1);
  }
}

function makeContext(h) {
  const deadline = Number(h['lambda-runtime-deadline-ms'] || 0);
  return {
    awsRequestId: h['lambda-runtime-aws-request-id'],
    invokedFunctionArn: h['lambda-runtime-invoked-function-arn'],
    functionName: process.env.AWS_LAMBDA_FUNCTION_NAME,
    functionVersion: process.env.AWS_LAMBDA_FUNCTION_VERSION,
    memoryLimitInMB: process.env.AWS_LAMBDA_FUNCTION_MEMORY_SIZE,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    eventId: h['lambent-event-id'],
    attempt: Number(h['lambent-attempt'] || 1),
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(deadline - Date.now(), 0),
  };
}

function invoke(handler, event, context) {
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, result) => {
      if (settled) return;
      settled = true;
      err ? reject(err) : resolve(result);
    };
    try {
      const out = handler(event, context, callback);
      if (out && typeof out.then === 'function') out.then((r) => callback(null, r), (e) => callback(e));
      else if (handler.length < 3) callback(null, out);
    } catch (e) {
      callback(e);
    }
  });
}

async function main() {
  if (process.env.LAMBENT_PRESTART_FD) {
    await warmUp();
    takeAssignment(Number(process.env.LAMBENT_PRESTART_FD));
  }
  [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
  const handler = await loadHandler();
  for (;;) {
    const next = await request('GET', '/invocation/next');
    if (next.status !== 200) {
      console.error(`lambent bootstrap: /next answered ${next.status}`);
      process.exit(1);
    }
    const context = makeContext(next.headers);
    const id = context.awsRequestId;
    const text = next.body.toString('utf8');
    let event;
    try {
      event = text ? JSON.parse(text) : null;
    } catch (_) {
      event = text;
    }
    try {
      const result = await invoke(handler, event, context);
      const payload = JSON.stringify(result === undefined ? null : result);
      await request('POST', `/invocation/${id}/response`, payload, { 'Content-Type': 'application/json' });
    } catch (err) {
      await request('POST', `/invocation/${id}/error`, errorBody(err, id), {
        'Content-Type': 'application/json',
        'Lambda-Runtime-Function-Error-Type': 'Unhandled',
      });
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
