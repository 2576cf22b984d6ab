// Lambent's Node.js bootstrap: the AWS Lambda Runtime API client loop, no dependencies.
// Loads the handler named by _HANDLER ("module.function") from LAMBDA_TASK_ROOT and
// answers invocations with its result (a value, a promise, or a callback's result).
'use strict';
const http = require('http');
const path = require('path');
const fs = require('fs');
const { pathToFileURL } = require('url');

const [host, port] = process.env.AWS_LAMBDA_RUNTIME_API.split(':');
const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const BASE = '/2018-06-01/runtime';

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
