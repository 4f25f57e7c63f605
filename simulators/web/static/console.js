// segur-sim console: a little progressive enhancement, no framework, no build step.
// Everything works without this file; it adds copy buttons, extra header rows in the
// composer, a confirmation before abandoning a CNDA dossier or deleting a mailbox, the
// run form's hints and the live view of a conformance run (polls /api/mss/runs/{id} every second).
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("button.copy[data-copy]").forEach(function (button) {
    button.addEventListener("click", function () {
      var field = document.getElementById(button.getAttribute("data-copy"));
      if (!field) { return; }
      field.select();
      if (navigator.clipboard) {
        navigator.clipboard.writeText(field.value).then(function () {
          button.textContent = "Copied";
        });
      }
    });
  });

  var add = document.getElementById("add-header");
  if (add) {
    add.addEventListener("click", function () {
      var rows = document.querySelectorAll("#extra-headers .header-row");
      var copy = rows[rows.length - 1].cloneNode(true);
      copy.querySelectorAll("input").forEach(function (input) { input.value = ""; });
      add.parentNode.insertBefore(copy, add);
    });
  }

  followRun();
  suiteHints();

  document.querySelectorAll("form.confirm").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      var question = form.getAttribute("data-confirm") || "Abandon this dossier? This cannot be undone.";
      if (!window.confirm(question)) {
        event.preventDefault();
      }
    });
  });
});

// ---- conformance runs -------------------------------------------------------------------------
// Every value from the server goes into the page as text (textContent), never as HTML.
function el(tag, text, className) {
  var node = document.createElement(tag);
  if (text !== undefined && text !== null) { node.textContent = String(text); }
  if (className) { node.className = className; }
  return node;
}

function evidenceHref(kind, ref) {
  if (kind === "session") {
    return "/api/mss/sessions/" + encodeURIComponent(ref) + "/transcript";
  }
  if (kind === "submission" && /^[0-9]+$/.test(ref)) {
    return "/api/mss/submissions/" + ref + "/message";
  }
  return null;
}

function verdictNodes(cell, v) {
  cell.replaceChildren();
  if (!v) { return; }
  cell.appendChild(el("p", v.message, "message"));
  var dl = el("dl", null, "verdict-detail");
  function row(label, value, className) {
    if (!value) { return; }
    dl.appendChild(el("dt", label));
    dl.appendChild(el("dd", value, className));
  }
  row("expected", v.expected, "expected");
  row("observed", v.observed, "observed");
  row("requirements", (v.requirements || []).join(", "), "requirements");
  if (v.evidence && v.evidence.length) {
    dl.appendChild(el("dt", "evidence"));
    var dd = el("dd", null, "evidence");
    var ul = el("ul");
    v.evidence.forEach(function (e) {
      var li = el("li");
      var href = evidenceHref(e.kind, e.ref);
      var label = e.kind + " " + e.ref;
      if (href) {
        var a = el("a", label, "evidence-" + e.kind);
        a.href = href;
        li.appendChild(a);
      } else {
        li.appendChild(document.createTextNode(label));
      }
      if (e.detail) { li.appendChild(document.createTextNode(" \u2014 " + e.detail)); }
      ul.appendChild(li);
    });
    dd.appendChild(ul);
    dl.appendChild(dd);
  }
  cell.appendChild(dl);
}

function setStatus(span, status) {
  span.textContent = status;
  span.className = "verdict verdict-" + status;
}

function followRun() {
  var section = document.getElementById("run");
  if (!section || section.getAttribute("data-live") !== "1") { return; }
  var runId = section.getAttribute("data-run-id");
  var finished = ["pass", "fail", "error", "skip", "omit", "cancel"];

  function show(doc) {
    setStatus(document.getElementById("run-status"), doc.status);
    var tests = doc.tests || [];
    var done = 0;
    tests.forEach(function (t) {
      if (finished.indexOf(t.status) >= 0) { done += 1; }
      var row = document.getElementById("test-" + t.id);
      if (!row || row.getAttribute("data-status") === t.status) { return; }
      row.setAttribute("data-status", t.status);
      setStatus(row.querySelector(".test-status span"), t.status);
      verdictNodes(row.querySelector(".test-verdict"), t.verdict);
    });
    var progress = document.getElementById("run-progress");
    progress.max = tests.length;
    progress.value = done;
    document.getElementById("run-progress-text").textContent = done + " / " + tests.length + " tests";

    var current = null;
    (doc.events || []).forEach(function (e) {
      if (e.kind === "step-start") { current = e; }
      else if (e.kind === "step-end" || e.kind === "run-end") { current = null; }
    });
    var box = document.getElementById("current-step");
    if (current && doc.inProgress) {
      document.getElementById("current-where").textContent =
        current.test + " step " + current.step + " (up to " + current.timeout + " s)";
      document.getElementById("instruction").textContent = current.instruction;
      box.hidden = false;
    } else {
      box.hidden = true;
    }
    if (!doc.inProgress) {
      section.setAttribute("data-live", "0");
      if (doc.endedAt) {
        document.getElementById("run-ended").textContent = new Date(doc.endedAt * 1000).toISOString();
      }
      var cancel = document.getElementById("cancel-run");
      if (cancel) { cancel.hidden = true; }
      if (doc.proofDir) { document.getElementById("proof").hidden = false; }
    }
    return doc.inProgress;
  }

  function poll() {
    fetch("/api/mss/runs/" + encodeURIComponent(runId), { headers: { "Accept": "application/json" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (doc) {
        document.getElementById("poll-error").hidden = true;
        if (show(doc)) { window.setTimeout(poll, 1000); }
      })
      .catch(function (error) {
        var box = document.getElementById("poll-error");
        box.textContent = "Cannot follow the run: " + error.message + " (retrying)";
        box.hidden = false;
        window.setTimeout(poll, 2000);
      });
  }
  poll();
}

// The run form: list the suite's tests and offer only mailboxes of the suite's types.
function suiteHints() {
  var suite = document.getElementById("run-suite");
  var mailbox = document.getElementById("run-mailbox");
  if (!suite || !mailbox) { return; }
  function update() {
    var option = suite.options[suite.selectedIndex];
    if (!option) { return; }
    var types = (option.getAttribute("data-types") || "").split(" ");
    var firstAllowed = null;
    Array.prototype.forEach.call(mailbox.options, function (o) {
      var allowed = types.indexOf(o.getAttribute("data-type")) >= 0;
      o.hidden = !allowed;
      o.disabled = !allowed;
      if (allowed && firstAllowed === null) { firstAllowed = o; }
    });
    var chosen = mailbox.options[mailbox.selectedIndex];
    if ((!chosen || chosen.disabled) && firstAllowed) { firstAllowed.selected = true; }
    document.getElementById("suite-tests").textContent =
      "Tests of this suite: " + (option.getAttribute("data-tests") || "");
  }
  suite.addEventListener("change", update);
  update();
}
