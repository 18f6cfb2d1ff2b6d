# The kernel's cost of MPTCP on loopback, without holdfast: connects/s and one-connection bulk
# send rate for TCP->TCP, an MPTCP client to a TCP server (fallback) and MPTCP->MPTCP.
# Run: python3 bench/mptcp-cost.py (figures in README, "MPTCP"). Loopback only.
import socket, threading, time, sys
def server(proto, bulk):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM, proto)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(('127.0.0.1', 0)); s.listen(512)
    def loop():
        while True:
            c,_ = s.accept()
            if bulk:
                def sink(c=c):
                    while c.recv(1<<20): pass
                    c.close()
                threading.Thread(target=sink, daemon=True).start()
            else:
                c.close()
    threading.Thread(target=loop, daemon=True).start()
    return s.getsockname()[1]
def connects(cproto, sproto, n=2000):
    port = server(sproto, False)
    t=time.perf_counter()
    for _ in range(n):
        c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, cproto); c.connect(('127.0.0.1', port)); c.close()
    return n/(time.perf_counter()-t)
def bulk(cproto, sproto, total=2<<30):
    port = server(sproto, True)
    c = socket.socket(socket.AF_INET, socket.SOCK_STREAM, cproto); c.connect(('127.0.0.1', port))
    buf = b'x'*(1<<20); sent=0; t=time.perf_counter()
    while sent<total: sent+=c.send(buf)
    c.close(); return sent/(time.perf_counter()-t)/2**20
for name,cp,sp in [('tcp->tcp',0,0),('mptcp->tcp (fallback)',262,0),('mptcp->mptcp',262,262)]:
    print(f"{name}: {connects(cp,sp):.0f} connects/s, bulk {bulk(cp,sp):.0f} MiB/s", flush=True)
