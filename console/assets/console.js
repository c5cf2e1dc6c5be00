// The console's only script: live updates over server-sent events. Every
// page works without it; it only saves reloading.
"use strict";

// [data-live-orders]: the rows of the orders table, replaced when they change.
document.querySelectorAll("[data-live-orders]").forEach(function (body) {
  var source = new EventSource(body.dataset.liveOrders);
  source.addEventListener("orders", function (event) {
    body.innerHTML = event.data;
    document.documentElement.dataset.liveUpdates =
      String(Number(document.documentElement.dataset.liveUpdates || 0) + 1);
  });
});

// [data-live-saga]: an order's status and saga picture, until the saga stops.
document.querySelectorAll("[data-live-saga]").forEach(function (section) {
  var source = new EventSource(section.dataset.liveSaga);
  source.addEventListener("saga", function (event) {
    section.innerHTML = event.data;
  });
  source.addEventListener("end", function () {
    source.close();
  });
});

// [data-tail]: a topic's new messages, newest first, at most data-keep rows.
document.querySelectorAll("[data-tail]").forEach(function (body) {
  var keep = Number(body.dataset.keep || 50);
  var source = new EventSource(body.dataset.tail);
  source.addEventListener("message", function (event) {
    body.insertAdjacentHTML("afterbegin", event.data);
    while (body.rows.length > keep) {
      body.deleteRow(body.rows.length - 1);
    }
  });
});

// [data-refresh]: a fragment fetched again every data-every milliseconds.
document.querySelectorAll("[data-refresh]").forEach(function (box) {
  var every = Number(box.dataset.every || 5000);
  setInterval(function () {
    fetch(box.dataset.refresh)
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) { if (html !== null) { box.innerHTML = html; } })
      .catch(function () {});
  }, every);
});
