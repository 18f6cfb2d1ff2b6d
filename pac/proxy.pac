// holdfast proxy auto-config (PAC), rendered by holdfast from pac/proxy.pac. Do not edit a served
// copy: set `pac.bypass` and `pac.direct` in holdfast's configuration instead.
//
// Everything goes through holdfast (its HTTP proxy first, then SOCKS5 on the same port) except
// the bypass list. Only standard PAC functions are used (isInNet, dnsDomainIs, isPlainHostName),
// and never on a name that would need resolving: isInNet is called on IPv4 literals only, so
// checking a URL never costs a DNS query (or leaks one past the proxy).
//
// The lines marked /*@...*/ are filled in by holdfast; unrendered, the file sends everything DIRECT.

var PROXY = /*@proxy*/ "DIRECT";
var BYPASS_PLAIN = /*@plain*/ false; // names without a dot go direct ("<local>")
var BYPASS_NAMES = /*@names*/ []; // exact names, lower case
var BYPASS_SUFFIXES = /*@suffixes*/ []; // ".local": any name ending with it
var BYPASS_NETS4 = /*@nets4*/ []; // [network, mask] for isInNet
var BYPASS_NETS6 = /*@nets6*/ []; // [eight 16-bit groups, prefix length]

function isIpv4Literal(h) {
  return /^\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

// "fe80::1", "::ffff:10.0.0.1" -> eight numbers, or null if h is not an IPv6 literal.
function ipv6Groups(h) {
  var pct = h.indexOf("%");
  if (pct >= 0) h = h.substring(0, pct);
  var tail = [];
  var last = h.lastIndexOf(":");
  var quad = h.substring(last + 1);
  if (last >= 0 && isIpv4Literal(quad)) {
    var q = quad.split(".");
    tail = [parseInt(q[0], 10) * 256 + parseInt(q[1], 10), parseInt(q[2], 10) * 256 + parseInt(q[3], 10)];
    h = h.substring(0, last + 1);
    if (h.slice(-2) !== "::") h = h.substring(0, h.length - 1);
  }
  var halves = h.split("::");
  if (halves.length > 2) return null;
  var head = halves[0] === "" ? [] : halves[0].split(":");
  var rest = halves.length === 2 && halves[1] !== "" ? halves[1].split(":") : [];
  var fill = 8 - tail.length - head.length - rest.length;
  if (halves.length === 1 ? fill !== 0 : fill < 1) return null;
  var parts = head;
  if (halves.length === 2) for (var z = 0; z < fill; z++) parts.push("0");
  parts = parts.concat(rest);
  var out = [];
  for (var i = 0; i < parts.length; i++) {
    if (!/^[0-9a-f]{1,4}$/.test(parts[i])) return null;
    out.push(parseInt(parts[i], 16));
  }
  return out.concat(tail);
}

function inNet6(g, net, len) {
  for (var i = 0; i < 8 && len > 0; i++, len -= 16) {
    var bits = len >= 16 ? 16 : len;
    var mask = (0xffff << (16 - bits)) & 0xffff;
    if ((g[i] & mask) !== (net[i] & mask)) return false;
  }
  return true;
}

function bypassIpv4(h) {
  for (var i = 0; i < BYPASS_NETS4.length; i++) {
    if (isInNet(h, BYPASS_NETS4[i][0], BYPASS_NETS4[i][1])) return true;
  }
  return false;
}

function FindProxyForURL(url, host) {
  var h = host.toLowerCase();
  if (h.charAt(0) === "[") h = h.substring(1, h.length - 1);
  if (h.length > 1 && h.charAt(h.length - 1) === ".") h = h.substring(0, h.length - 1);
  var i;
  if (isIpv4Literal(h)) return bypassIpv4(h) ? "DIRECT" : PROXY;
  if (h.indexOf(":") >= 0) {
    var g = ipv6Groups(h);
    if (g === null) return PROXY;
    // an IPv4-mapped address (::ffff:a.b.c.d) is checked as IPv4 too
    if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
      var v4 = (g[6] >> 8) + "." + (g[6] & 255) + "." + (g[7] >> 8) + "." + (g[7] & 255);
      if (bypassIpv4(v4)) return "DIRECT";
    }
    for (i = 0; i < BYPASS_NETS6.length; i++) {
      if (inNet6(g, BYPASS_NETS6[i][0], BYPASS_NETS6[i][1])) return "DIRECT";
    }
    return PROXY;
  }
  if (BYPASS_PLAIN && isPlainHostName(h)) return "DIRECT";
  for (i = 0; i < BYPASS_NAMES.length; i++) {
    if (h === BYPASS_NAMES[i]) return "DIRECT";
  }
  for (i = 0; i < BYPASS_SUFFIXES.length; i++) {
    if (dnsDomainIs(h, BYPASS_SUFFIXES[i])) return "DIRECT";
  }
  return PROXY;
}
