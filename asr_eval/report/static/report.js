// Attach embedded audio (stored once per utterance in a JSON data block) to its players.
(function () {
  "use strict";
  var block = document.getElementById("audio-data");
  if (!block) { return; }
  var uris = JSON.parse(block.textContent || "{}");
  var players = document.querySelectorAll("audio[data-audio]");
  for (var i = 0; i < players.length; i++) {
    var uri = uris[players[i].getAttribute("data-audio")];
    if (uri) { players[i].src = uri; }
  }
  document.documentElement.setAttribute("data-audio-ready", String(players.length));
})();
