// What the client reports of the messages handed to a connection that was lost: the
// relay confirms none, so all are counted, and the newest are kept within the bounds
// (unconfirmedLimit, unconfirmedBytes). On a stand-in socket: no relay needed.
//   node --test clients/js/test/

import assert from "node:assert/strict";
import { test } from "node:test";

import { Client, Incoming } from "../wsproxy.js";

/** A client whose connection is a stand-in that takes every message. */
function connected(options) {
  const client = new Client("ws://relay/ws?groupName=g", { WebSocket: class {}, ...options });
  const written = [];
  client._ws = { readyState: 1, send: (data) => written.push(data) };
  client.state = "connected";
  return { client, written };
}

/** The "disconnected" event's detail when the relay closes the connection with `code`. */
function lose(client, code) {
  let detail = null;
  client.addEventListener("disconnected", (event) => (detail = event.detail), { once: true });
  client._closedAfterOpen(client._ws, code, "");
  clearTimeout(client._timer); // (no reconnecting here)
  return detail;
}

test("a lost connection reports every message handed to it, the newest within the bounds", async () => {
  const { client, written } = connected({ unconfirmedLimit: 3, unconfirmedBytes: 1000 });
  for (let n = 0; n < 4; n += 1) await client.send("System.String", `m${n}`);
  await client.sendBinary(new Uint8Array(2000)); // over unconfirmedBytes: counted only
  await client.sendBinary(new Uint8Array([1, 2, 3]));
  const lost = lose(client, 4004);
  assert.equal(written.length, 6);
  assert.equal(lost.code, 4004);
  assert.equal(lost.reconnecting, true);
  assert.equal(lost.unconfirmed, 6);
  assert.deepEqual(
    lost.unconfirmedMessages.map(({ sentAt, ...sent }) => sent),
    [
      { messageType: "System.String", value: "m2", id: null, replyId: null, to: null, group: null, size: written[2].length },
      { messageType: "System.String", value: "m3", id: null, replyId: null, to: null, group: null, size: written[3].length },
      { messageType: null, value: new Uint8Array([1, 2, 3]), id: null, replyId: null, to: null, group: null, size: 3 },
    ],
  );
  assert.equal(client.stats.unconfirmed, 6);
});

test("the bytes bound forgets the oldest first, and each report covers one connection", async () => {
  const { client } = connected({ unconfirmedLimit: 10, unconfirmedBytes: 100 });
  await client.sendBinary(new Uint8Array(60));
  await client.sendBinary(new Uint8Array(50)); // 110 bytes: the first one goes
  assert.deepEqual(
    lose(client, 1006).unconfirmedMessages.map((sent) => sent.size),
    [50],
  );
  client._ws = { readyState: 1, send: () => {} };
  const nothing = lose(client, 1001);
  assert.equal(nothing.unconfirmed, 0);
  assert.deepEqual(nothing.unconfirmedMessages, []);
});

test("a request and a reply say which request they are", async () => {
  const { client, written } = connected({});
  const asked = client.request("System.String", "question", { timeout: 50 }).catch((error) => error.name);
  const question = new Incoming(client, { value: "q", messageType: "System.String", id: "their-request" });
  await question.reply("System.String", "answer");
  const [request, reply] = lose(client, 1011).unconfirmedMessages;
  assert.equal(request.id, JSON.parse(written[0]).Id);
  assert.equal(request.value, "question");
  assert.equal(reply.replyId, "their-request");
  assert.equal(reply.value, "answer");
  assert.equal(await asked, "RequestTimeout");
});
