// Live event feed of the overview page: new events from the API's Server-Sent Events stream are
// added on top of the table the server rendered. EventSource reconnects by itself when the
// stream ends (the server closes it after a while); the page works without this script.
(function () {
  "use strict";
  var table = document.querySelector("#feed tbody");
  var state = document.getElementById("feed-state");
  if (!table || !window.EventSource) { return; }
  var MAX_ROWS = 200;

  function cell(text, className) {
    var td = document.createElement("td");
    if (className) { td.className = className; }
    var code = document.createElement(className === "data" || className === "type" ? "code" : "span");
    code.textContent = text;
    td.appendChild(code);
    return td;
  }

  function add(event) {
    var tr = document.createElement("tr");
    tr.className = "new";
    tr.dataset.type = event.type;
    var data = JSON.stringify(event.data || {});
    tr.appendChild(cell((event.time || "").slice(0, 19).replace("T", " ")));
    tr.appendChild(cell(event.type, "type"));
    tr.appendChild(cell(event.subject || ""));
    tr.appendChild(cell(data.length > 160 ? data.slice(0, 157) + "..." : data, "data"));
    table.insertBefore(tr, table.firstChild);
    while (table.rows.length > MAX_ROWS) { table.deleteRow(-1); }
  }

  var source = new EventSource("/api/events/stream?named=false&timeout=600");
  source.onopen = function () { state.textContent = "(live)"; };
  source.onerror = function () { state.textContent = "(reconnecting)"; };
  source.onmessage = function (message) { add(JSON.parse(message.data)); };
})();
