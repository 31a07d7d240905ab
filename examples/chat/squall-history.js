// squall-history.js: a WebSocket that reconnects and recovers what it missed
// from a squall group with history (see squall's History docs for the
// protocol). No dependencies; works in every browser with WebSocket.
//
//   var socket = new SquallHistorySocket({
//     url: function (since) { return "ws://host/chat/lobby" + (since ? "?since=" + encodeURIComponent(since) : ""); },
//     group: "lobby",                  // the group whose offsets are kept
//     storage: window.sessionStorage,  // optional: survive a page reload
//     onMessage: function (data, envelope) {},  // history messages, in order, once
//     onOther: function (message) {},           // anything else the server sends (parsed JSON or text)
//     onRecovery: function (status) {},         // {recovered, missed, offset}; recovered=false: a gap
//     onState: function (state) {}              // "connecting" | "open" | "closed"
//   });
//   socket.send("text");
//
// The helper remembers the offset of the last history message handled and
// reconnects with it (backoff 0.5 s doubling to 10 s), so the server replays
// what was missed before new messages. It drops an envelope whose offset it
// has already handled, as a second line of defence.
(function (global) {
  "use strict";

  function parseOffset(offset) {
    if (typeof offset !== "string") { return null; }
    var at = offset.lastIndexOf(":");
    if (at <= 0) { return null; }
    var seq = Number(offset.slice(at + 1));
    return isFinite(seq) ? { epoch: offset.slice(0, at), seq: seq } : null;
  }

  function SquallHistorySocket(options) {
    this.options = options;
    this.key = "squall-offset:" + options.group;
    this.offset = null;
    if (options.storage) {
      try { this.offset = options.storage.getItem(this.key); } catch (e) { this.offset = null; }
    }
    this.delay = 500;
    this.stopped = false;
    this.ws = null;
    this.connect();
  }

  SquallHistorySocket.prototype.remember = function (offset) {
    this.offset = offset;
    if (this.options.storage) {
      try { this.options.storage.setItem(this.key, offset); } catch (e) { /* full or denied */ }
    }
  };

  SquallHistorySocket.prototype.connect = function () {
    var self = this;
    var options = this.options;
    if (options.onState) { options.onState("connecting"); }
    var ws = new WebSocket(options.url(this.offset));
    this.ws = ws;
    ws.onopen = function () {
      self.delay = 500;
      if (options.onState) { options.onState("open"); }
    };
    ws.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { message = event.data; }
      if (message && message.type === "squall.recovery" && message.group === options.group) {
        if (!message.recovered) {
          // A gap: what follows is all the server still has, take it all.
          self.offset = null;
        } else if (!self.offset && message.offset) {
          // A fresh join: recover from here if we drop before a message.
          self.remember(message.offset);
        }
        if (options.onRecovery) { options.onRecovery(message); }
        return;
      }
      if (message && message.type === "squall.message" && message.group === options.group) {
        var seen = parseOffset(self.offset);
        var got = parseOffset(message.offset);
        if (got && seen && got.epoch === seen.epoch && got.seq <= seen.seq) { return; }
        if (message.offset) { self.remember(message.offset); }
        if (options.onMessage) { options.onMessage(message.data, message); }
        return;
      }
      if (options.onOther) { options.onOther(message); }
    };
    ws.onclose = function () {
      if (options.onState) { options.onState("closed"); }
      if (self.stopped) { return; }
      var delay = self.delay;
      self.delay = Math.min(self.delay * 2, 10000);
      setTimeout(function () { if (!self.stopped) { self.connect(); } }, delay);
    };
  };

  SquallHistorySocket.prototype.send = function (data) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) { this.ws.send(data); return true; }
    return false;
  };

  SquallHistorySocket.prototype.close = function () {
    this.stopped = true;
    if (this.ws) { this.ws.close(1000); }
  };

  global.SquallHistorySocket = SquallHistorySocket;
})(typeof window !== "undefined" ? window : this);
