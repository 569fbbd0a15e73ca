// A JavaScript member for the suite's tests (tests/test_js_client.py), on Node's own
// WebSocket (node --experimental-websocket). It joins with the options given as JSON in
// argv[2], prints what happens as JSON lines, and does what a "Demo.Command" message
// from the group tells it to. With `lateMs`, it registers its handlers and listeners
// that long after it connected, as a program that awaits something else first does.
import { createHash } from "node:crypto";

import { connect } from "../../clients/js/wsproxy.js";

const { urls, lateMs = 0, ...options } = JSON.parse(process.argv[2]);
const say = (event) => process.stdout.write(`${JSON.stringify(event)}\n`);

const client = await connect(urls, options);
say({ event: "connected", id: client.id, protocol: client.protocol, members: [...client.members].sort(), position: client.position });
if (lateMs) await new Promise((resolve) => setTimeout(resolve, lateMs));

for (const name of ["joined", "left", "resumed", "deliveryfailed", "badmessage"]) {
  client.addEventListener(name, (event) => say({ event: name, ...event.detail }));
}
client.addEventListener("disconnected", (event) => {
  // What was sent on the lost connection: binary values as their size, times left out.
  const { unconfirmedMessages, ...rest } = event.detail;
  const sent = unconfirmedMessages.map(({ value, sentAt, ...fields }) => ({
    ...fields,
    value: value instanceof Uint8Array ? { bytes: value.byteLength } : value,
  }));
  say({ event: "disconnected", ...rest, unconfirmedMessages: sent });
});
client.addEventListener("state", (event) => {
  const { state } = event.detail;
  say({ event: "state", state, url: client.url });
});

client.on("Demo.Say", (value, incoming) => {
  // Where it is in the group's history, when the relay keeps one.
  const where = incoming.offset === null ? {} : { offset: incoming.offset, position: client.position };
  say({ event: "said", value, sender: incoming.sender, direct: incoming.direct, ...where });
});
client.on("Demo.Ask", (value, incoming) => {
  incoming.reply("Demo.Answer", { text: value.text.toUpperCase() });
});
client.onBinary(async (data, incoming) => {
  const sha256 = createHash("sha256").update(new Uint8Array(data)).digest("hex");
  say({ event: "binary", size: data.byteLength, sha256, sender: incoming.sender });
});
client.on("Demo.Command", async (command) => {
  try {
    if (command.do === "say") {
      if (command.to) await client.sendTo(command.to, "Demo.Say", { text: command.text });
      else await client.send("Demo.Say", { text: command.text });
    } else if (command.do === "ask") {
      const answer = await client.request("Demo.Ask", { text: command.text }, { timeout: command.timeout ?? 5000, to: command.to ?? null });
      say({ event: "answered", value: answer });
    } else if (command.do === "binary") {
      const data = new Uint8Array(command.size).map((_, i) => (i * 7) & 0xff);
      await client.sendBinary(data.buffer);
      say({ event: "sent_binary", sha256: createHash("sha256").update(data).digest("hex") });
    } else if (command.do === "iterate") {
      // The next `size` Demo.Say messages, through the async iterator.
      const texts = [];
      for await (const incoming of client.messages("Demo.Say")) {
        texts.push(incoming.value.text);
        if (texts.length === command.size) break;
      }
      say({ event: "iterated", texts });
    } else if (command.do === "burst") {
      // `size` Demo.Say messages at once, "TEXT0", "TEXT1", ...: all handed to the socket.
      for (let n = 0; n < command.size; n += 1) await client.send("Demo.Say", { text: `${command.text}${n}` });
      say({ event: "burst_sent" });
    } else if (command.do === "members") {
      say({ event: "members", members: [...client.members].sort(), count: client.memberCount });
    } else if (command.do === "close-when-reconnecting") {
      // Close while the client waits to reconnect: it must stay closed.
      const closed = new Promise((resolve) => {
        client.addEventListener("state", (event) => {
          if (event.detail.state === "reconnecting") client.close().then(resolve);
        });
      });
      say({ event: "armed" });
      await closed;
      say({ event: "closed_while_reconnecting", state: client.state });
    }
  } catch (error) {
    say({ event: "failed", command: command.do, error: error.name, message: error.message });
  }
});
say({ event: "ready" });
