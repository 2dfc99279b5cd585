// agentdesk emulator page: draws the workspace from the backend's live feed and posts as the person.
// No framework and no build step; every piece of text from the bot is escaped before it is formatted.
"use strict";

const state = {
  config: null,
  flavour: localStorage.getItem("agentdesk.flavour") || "slack",
  conversation: "general",
  thread: null,            // id of the root message whose thread is open
  messages: new Map(),
  statuses: new Map(),     // "flavour|conversation|thread" -> text
  chosen: { composer: [], "thread-composer": [] },
};

const $ = (sel) => document.querySelector(sel);
const EMOJI = {
  gear: "⚙️", white_check_mark: "✅", x: "❌", warning: "⚠️", information_source: "ℹ️", mag: "🔍",
  hourglass: "⏳", hourglass_flowing_sand: "⏳", paperclip: "📎", bar_chart: "📊", page_facing_up: "📄",
  robot_face: "🤖", wave: "👋", thinking_face: "🤔", heavy_check_mark: "✔️", no_entry: "⛔", lock: "🔒",
};

function esc(text) {
  return String(text).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function safeHref(url) {
  return /^(https?:\/\/|\/_emulator\/)/i.test(url) ? esc(url) : null;
}

function link(url, label) {
  const href = safeHref(url);
  return href ? `<a href="${href}" target="_blank" rel="noopener noreferrer">${esc(label)}</a>` : esc(label);
}

// ---- Slack mrkdwn ------------------------------------------------------------------------------

function slackDecode(text) {
  return text.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

function slackInlineFormat(plain) {
  let html = esc(plain);
  html = html.replace(/`([^`\n]+)`/g, "<code>$1</code>");
  html = html.replace(/(^|[\s(])\*([^*\n]+)\*(?=$|[\s).,!?:;])/g, "$1<b>$2</b>");
  html = html.replace(/(^|[\s(])_([^_\n]+)_(?=$|[\s).,!?:;])/g, "$1<i>$2</i>");
  html = html.replace(/(^|[\s(])~([^~\n]+)~(?=$|[\s).,!?:;])/g, "$1<s>$2</s>");
  html = html.replace(/:([a-z0-9_+-]+):/g, (m, name) => EMOJI[name] || m);
  return html;
}

function slackSegment(text) {
  // Slack markup tokens (<@U…>, <url|label>, <#C…|name>, <!here>) are the only raw angle brackets.
  let out = "";
  let last = 0;
  const re = /<([^<>\n]+)>/g;
  let m;
  while ((m = re.exec(text))) {
    out += slackInlineFormat(slackDecode(text.slice(last, m.index)));
    const [target, label] = m[1].split("|", 2);
    if (target.startsWith("@")) {
      const id = target.slice(1);
      const name = id === state.config.slack_ids.bot ? state.config.bot
        : id === state.config.slack_ids.person ? state.config.person : (label || id);
      out += `<span class="mention">@${esc(name)}</span>`;
    } else if (target.startsWith("#")) {
      out += `<span class="mention">#${esc(label || target.slice(1))}</span>`;
    } else if (target.startsWith("!")) {
      out += `<span class="mention">@${esc(target.slice(1))}</span>`;
    } else {
      out += link(slackDecode(target), slackDecode(label || target));
    }
    last = re.lastIndex;
  }
  out += slackInlineFormat(slackDecode(text.slice(last)));
  return out;
}

function slackToHtml(text) {
  const parts = String(text || "").split("```");
  return parts.map((part, i) => {
    if (i % 2) return `<pre><code>${esc(slackDecode(part.replace(/^\n/, "").replace(/\n$/, "")))}</code></pre>`;
    const body = i > 0 ? part.replace(/^\n/, "") : part;
    return body.split("\n").map((line) => {
      const quote = /^(&gt;|>) ?/.exec(line);
      if (quote) return `<blockquote>${slackSegment(line.slice(quote[0].length))}</blockquote>`;
      return slackSegment(line);
    }).join("<br>").replace(/<\/blockquote><br><blockquote>/g, "<br>").replace(/<\/blockquote><br>/g, "</blockquote>");
  }).join("");
}

// ---- Teams markdown ----------------------------------------------------------------------------

function mdInline(plain) {
  const links = [];
  let text = plain.replace(/\[([^\]\n]+)\]\(([^)\s]+)\)/g, (m, label, url) => {
    links.push(link(url, label));
    return `\u0000${links.length - 1}\u0000`;
  });
  let html = esc(text);
  html = html.replace(/`([^`\n]+)`/g, "<code>$1</code>");
  html = html.replace(/\*\*([^*\n]+)\*\*/g, "<b>$1</b>");
  html = html.replace(/(^|[\s(])[*_]([^*_\n]+)[*_](?=$|[\s).,!?:;])/g, "$1<i>$2</i>");
  html = html.replace(/&lt;at&gt;(.*?)&lt;\/at&gt;/g, '<span class="mention">@$1</span>');
  return html.replace(/\u0000(\d+)\u0000/g, (m, i) => links[Number(i)]);
}

function markdownToHtml(text) {
  const parts = String(text || "").split("```");
  return parts.map((part, i) => {
    if (i % 2) return `<pre><code>${esc(part.replace(/^[a-z]*\n/, "").replace(/\n$/, ""))}</code></pre>`;
    return part.split("\n").map((line) => {
      if (line.startsWith("> ")) return `<blockquote>${mdInline(line.slice(2))}</blockquote>`;
      return mdInline(line);
    }).join("<br>");
  }).join("");
}

function blocksHtml(m) {
  // Block Kit sections and context lines as Slack draws them (buttons are drawn by controlsHtml).
  return m.blocks.map((b) => {
    if (b.type === "section" && b.text) return `<div class="block-section">${slackToHtml(b.text.text || "")}</div>`;
    if (b.type === "context") return `<div class="block-context">${(b.elements || []).map((e) => slackToHtml(e.text || "")).join(" ")}</div>`;
    return "";
  }).join("");
}

function bodyHtml(m) {
  // Slack's markdown block and a stream's markdown_text are standard Markdown; everything else is mrkdwn
  if (m.flavour === "slack" && m.author === "bot" && (m.markdown || m.format === "markdown")) return markdownToHtml(m.markdown || m.text);
  if (m.flavour === "slack" && m.author === "bot" && (m.blocks || []).some((b) => b.type === "section")) return blocksHtml(m);
  if (m.flavour === "slack" && m.author !== "emulator") return slackToHtml(m.text);
  if (m.author === "emulator") return esc(m.text);
  return markdownToHtml(m.text);
}

// ---- rendering ---------------------------------------------------------------------------------

function humanSize(bytes) {
  if (bytes == null) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}

function fileHtml(f) {
  if (f.image) {
    return `<a class="file-image" href="${esc(f.url)}" target="_blank" rel="noopener"><img src="${esc(f.url)}" alt="${esc(f.name)}"><span>${esc(f.name)}</span></a>`;
  }
  return `<a class="file-chip" href="${esc(f.url)}" download="${esc(f.name)}">📄 <span class="file-name">${esc(f.name)}</span> <span class="size">${humanSize(f.size)}</span></a>`;
}

function cardHtml(m, card, index) {
  if (card.kind === "consent") {
    let actions;
    if (card.state === "pending") {
      actions = `<div class="card-actions"><button type="button" data-consent="accept" data-message="${esc(m.id)}" data-index="${index}">Accept</button>` +
        `<button type="button" class="secondary" data-consent="decline" data-message="${esc(m.id)}" data-index="${index}">Decline</button></div>`;
    } else {
      const words = { sending: "Sending your answer…", accepted: "Accepted", declined: "Declined", failed: "The bot did not take the answer (see the notice)" };
      actions = `<div class="card-state">${esc(words[card.state] || card.state)}</div>`;
    }
    return `<div class="card consent-card"><div class="card-title">📄 ${esc(card.name)} <span class="size">${humanSize(card.size)}</span></div>` +
      `<div>${esc(card.description || "")}</div><div class="size">Save to OneDrive?</div>${actions}</div>`;
  }
  if (card.kind === "file") {
    return card.url
      ? `<a class="file-chip file-info" href="${esc(card.url)}" download="${esc(card.name)}">📎 <span class="file-name">${esc(card.name)}</span></a>`
      : `<span class="file-chip">📎 ${esc(card.name)}</span>`;
  }
  if (card.kind === "image" && card.url) {
    return `<a class="file-image"><img src="${esc(card.url)}" alt="${esc(card.name)}"><span>${esc(card.name)}</span></a>`;
  }
  if (card.kind === "text") return `<div class="card">${markdownToHtml(card.text)}</div>`;
  if (card.kind === "actions") {
    return `<div class="card action-card">${markdownToHtml(card.text)}<div class="card-actions">${card.actions.map((a, i) =>
      `<button type="button" data-card-action="${i}" data-message="${esc(m.id)}" data-index="${index}">${esc(a.title)}</button>`).join("")}</div></div>`;
  }
  return `<div class="card">Attachment ${esc(card.content_type || "")} ${esc(card.name || "")}</div>`;
}

function tasksHtml(m) {
  if (!m.tasks || !m.tasks.length) return "";
  const icons = { complete: "✅", error: "❌", in_progress: "⏳", pending: "•" };
  return `<ul class="tasks">${m.tasks.map((t) =>
    `<li class="task task-${esc(t.status || "")}">${icons[t.status] || "•"} ${esc(t.title || "")}` +
    (t.details ? `<pre><code>${esc(t.details)}</code></pre>` : "") +
    (t.output ? `<div class="task-output">${esc(t.output)}</div>` : "") + taskSources(t) + "</li>").join("")}</ul>`;
}

function taskSources(t) {
  if (!t.sources || !t.sources.length) return "";
  return `<div class="task-sources">${t.sources.map((src) => link(src.url || "", src.text || src.url || "")).join(" · ")}</div>`;
}

function controlsHtml(m) {
  // Block Kit buttons the bot put on the message (Stop, feedback) and Slack's own stop control while streaming
  const parts = (m.controls || []).map((c, i) => {
    if (c.kind === "feedback") {
      const pressed = m.feedback === c.feedback;
      return `<button type="button" class="feedback" data-press="${esc(m.id)}" data-index="${i}" aria-pressed="${pressed}" ` +
        `title="${esc(c.text)}" aria-label="${esc(c.text)}">${c.feedback === "positive" ? "👍" : "👎"}</button>`;
    }
    return `<button type="button" class="control${c.style === "danger" ? " danger" : ""}" data-press="${esc(m.id)}" data-index="${i}">${esc(c.text)}</button>`;
  });
  if (m.streaming && m.flavour === "slack") {
    parts.push(`<button type="button" class="control native-stop" data-native-stop="${esc(m.id)}" ${m.stop_requested ? "disabled" : ""}>⏹ Stop</button>`);
  }
  return parts.length ? `<div class="controls">${parts.join("")}</div>` : "";
}

function canThread(m) {
  return m.author !== "emulator" && !(m.flavour === "teams" && m.conversation === state.config.dm);
}

function messageHtml(m, inThread) {
  const name = m.author === "user" ? state.config.person : m.author === "bot" ? state.config.bot : "Emulator";
  const initial = name[0].toUpperCase();
  const time = new Date(m.time * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const badge = (m.author === "bot" ? `<span class="badge">${m.flavour === "slack" ? "APP" : "Bot"}</span>` : "") +
    (m.ephemeral ? '<span class="edited">Only visible to you</span>' : "");
  const replies = [...state.messages.values()].filter((r) => r.thread === m.id).length;
  let threadLink = "";
  if (!inThread && canThread(m)) {
    const label = replies ? `${replies} ${replies === 1 ? "reply" : "replies"}` : (m.flavour === "slack" ? "Reply in thread" : "Reply");
    threadLink = `<button type="button" class="replies" data-thread="${esc(m.id)}">${label}</button>`;
  }
  const files = (m.files || []).length ? `<div class="files">${m.files.map(fileHtml).join("")}</div>` : "";
  const cards = (m.cards || []).map((c, i) => cardHtml(m, c, i)).join("");
  return `<div class="message author-${esc(m.author)}${m.streaming ? " streaming" : ""}" data-id="${esc(m.id)}">` +
    `<div class="avatar" aria-hidden="true">${esc(initial)}</div><div class="message-main">` +
    `<div class="message-head"><span class="name">${esc(name)}</span>${badge}<time>${time}</time>${m.edited ? '<span class="edited">(edited)</span>' : ""}</div>` +
    `<div class="body${m.streaming ? " streaming-dots" : ""}">${bodyHtml(m)}</div>${tasksHtml(m)}${files}${cards}${controlsHtml(m)}${threadLink}</div></div>`;
}

function renderList(container, messages, inThread) {
  const nearBottom = container.scrollHeight - container.scrollTop - container.clientHeight < 80;
  container.innerHTML = messages.map((m) => messageHtml(m, inThread)).join("");
  if (nearBottom) container.scrollTop = container.scrollHeight;
}

function statusKey(flavour, conversation, thread) {
  return `${flavour}|${conversation}|${thread || ""}`;
}

function render() {
  if (!state.config) return;
  document.body.className = `flavour-${state.flavour}`;
  for (const button of document.querySelectorAll(".flavour button")) {
    button.setAttribute("aria-selected", String(button.dataset.flavour === state.flavour));
  }
  const slack = state.flavour === "slack";
  $("#workspace-name").textContent = slack ? "Emulator workspace" : "Emulator team";
  $("#channels-heading").textContent = slack ? "Channels" : "Emulator team · channels";
  $("#dm-heading").textContent = slack ? "Direct messages" : "Chat";
  $("#channel-list").innerHTML = state.config.channels.map((c) =>
    `<li><button type="button" data-conversation="${esc(c.key)}" aria-current="${c.key === state.conversation}">${slack ? "# " : ""}${esc(c.name)}</button></li>`).join("");
  $("#dm-list").innerHTML = `<li><button type="button" data-conversation="${esc(state.config.dm)}" aria-current="${state.conversation === state.config.dm}">${esc(state.config.bot)}</button></li>`;

  const dm = state.conversation === state.config.dm;
  const channel = state.config.channels.find((c) => c.key === state.conversation);
  const title = dm ? state.config.bot : (slack ? `# ${channel.name}` : channel.name);
  $("#conversation-title").textContent = title;
  let hint;
  if (dm) hint = slack ? "Direct message with the bot: no mention needed. Start with a department (hr: …) to pick one."
    : "Personal chat with the bot: no mention needed. Files you attach here reach the bot.";
  else hint = slack ? "Mention @agentdesk to ask; the bot answers in a thread."
    : "Teams gives a bot only channel messages that @mention it, and no files posted in channels (use the chat with agentdesk for files).";
  $("#conversation-hint").textContent = hint;
  $("#composer textarea").placeholder = dm ? `Message ${state.config.bot}` : `Message ${title}`;

  const here = [...state.messages.values()].filter((m) => m.flavour === state.flavour && m.conversation === state.conversation);
  renderList($("#messages"), here.filter((m) => !m.thread), false);
  $("#main-status").textContent = state.statuses.get(statusKey(state.flavour, state.conversation, null)) || "";

  const root = state.thread && state.messages.get(state.thread);
  const threadOpen = Boolean(root && root.flavour === state.flavour && root.conversation === state.conversation);
  $("#thread").hidden = !threadOpen;
  if (threadOpen) {
    $("#thread-title").textContent = slack ? `Thread in ${title}` : `Replies in ${title}`;
    renderList($("#thread-messages"), [root, ...here.filter((m) => m.thread === root.id)], true);
    $("#thread-status").textContent = state.statuses.get(statusKey(state.flavour, state.conversation, root.id)) || "";
  }
}

let scheduled = false;
function scheduleRender() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => { scheduled = false; render(); });
}

function renderBanners() {
  $("#banners").innerHTML = state.config.banners.map((b) =>
    `<div class="banner ${esc(b.level)}" role="alert"><strong>${esc(b.title)}</strong>${esc(b.text)}` +
    b.commands.map((c) => `<code>${esc(c)}</code>`).join("") + "</div>").join("");
}

// ---- live feed ---------------------------------------------------------------------------------

const typingTimers = new Map();

function onEvent(event) {
  if (event.kind === "snapshot") {
    state.messages = new Map(event.messages.map((m) => [m.id, m]));
  } else if (event.kind === "message") {
    state.messages.set(event.message.id, event.message);
    if (event.message.author === "bot") {
      state.statuses.delete(statusKey(event.message.flavour, event.message.conversation, event.message.thread));
    }
  } else if (event.kind === "delete") {
    state.messages.delete(event.id);
  } else if (event.kind === "status") {
    const key = statusKey(event.flavour, event.conversation, event.thread);
    if (event.text) state.statuses.set(key, `${state.config.bot} ${event.text.startsWith(state.config.bot) ? event.text.slice(state.config.bot.length + 1) : event.text}`);
    else state.statuses.delete(key);
    if (event.flavour === "teams" && event.text) {
      clearTimeout(typingTimers.get(key));
      typingTimers.set(key, setTimeout(() => { state.statuses.delete(key); scheduleRender(); }, 4000));
    }
  }
  scheduleRender();
}

function connect() {
  const source = new EventSource("/_emulator/events");
  source.onopen = () => { $("#connection").textContent = "connected to agentdesk"; };
  source.onmessage = (e) => onEvent(JSON.parse(e.data));
  source.onerror = () => { $("#connection").textContent = "reconnecting to agentdesk…"; };
}

// ---- actions -----------------------------------------------------------------------------------

async function post(url, body, json) {
  const response = await fetch(url, {
    method: "POST", body: json ? JSON.stringify(body) : body,
    headers: json ? { "Content-Type": "application/json", "X-Agentdesk-Emulator": "1" } : { "X-Agentdesk-Emulator": "1" },
  });
  if (!response.ok) throw new Error(`${response.status} ${await response.text()}`);
  return response.json();
}

function showChosen(form) {
  form.querySelector(".chosen-files").innerHTML = state.chosen[form.id].map((f) => `<li>📄 ${esc(f.name)}</li>`).join("");
}

async function submit(form) {
  const textarea = form.querySelector("textarea");
  const text = textarea.value.trim();
  const files = state.chosen[form.id];
  if (!text && !files.length) return;
  const data = new FormData();
  data.append("flavour", state.flavour);
  data.append("conversation", state.conversation);
  if (form.id === "thread-composer" && state.thread) data.append("thread", state.thread);
  data.append("text", text);
  for (const f of files) data.append("file", f, f.name);
  textarea.value = "";
  state.chosen[form.id] = [];
  form.querySelector("input[type=file]").value = "";
  showChosen(form);
  try {
    await post("/_emulator/send", data, false);
  } catch (err) {
    alert(`The emulator could not send that: ${err.message}`);
  }
}

function setup() {
  for (const form of document.querySelectorAll(".composer")) {
    form.addEventListener("submit", (e) => { e.preventDefault(); submit(form); });
    form.querySelector("textarea").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey) { e.preventDefault(); submit(form); }
    });
    form.querySelector("input[type=file]").addEventListener("change", (e) => {
      state.chosen[form.id] = [...state.chosen[form.id], ...e.target.files];
      showChosen(form);
    });
    form.querySelector(".mention").addEventListener("click", () => {
      const textarea = form.querySelector("textarea");
      textarea.value = `@${state.config.bot} ${textarea.value}`;
      textarea.focus();
    });
  }
  document.addEventListener("click", async (e) => {
    const target = e.target.closest("button");
    if (!target) return;
    if (target.dataset.flavour) {
      state.flavour = target.dataset.flavour;
      localStorage.setItem("agentdesk.flavour", state.flavour);
      state.thread = null;
    } else if (target.dataset.conversation) {
      state.conversation = target.dataset.conversation;
      state.thread = null;
    } else if (target.dataset.thread) {
      state.thread = target.dataset.thread;
    } else if (target.id === "close-thread") {
      state.thread = null;
    } else if (target.dataset.press || target.dataset.nativeStop) {
      target.disabled = true;
      try {
        if (target.dataset.press) await post("/_emulator/slack/press", { message: target.dataset.press, index: Number(target.dataset.index) }, true);
        else await post("/_emulator/slack/stop", { message: target.dataset.nativeStop }, true);
      } catch (err) {
        alert(`The emulator could not press that: ${err.message}`);
      }
      target.disabled = false;
      return;
    } else if (target.dataset.cardAction) {
      target.disabled = true;
      try {
        await post("/_emulator/teams/action", { message: target.dataset.message, index: Number(target.dataset.index), action: Number(target.dataset.cardAction) }, true);
      } catch (err) {
        alert(`The emulator could not press that button: ${err.message}`);
      }
      return;
    } else if (target.dataset.consent) {
      target.disabled = true;
      try {
        await post("/_emulator/consent", { message: target.dataset.message, index: Number(target.dataset.index), action: target.dataset.consent }, true);
      } catch (err) {
        alert(`The emulator could not answer the card: ${err.message}`);
      }
      return;
    } else {
      return;
    }
    render();
  });
}

async function main() {
  state.config = await (await fetch("/_emulator/config")).json();
  renderBanners();
  setup();
  render();
  connect();
}

main();
