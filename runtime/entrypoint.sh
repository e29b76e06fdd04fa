#!/bin/sh
# Starts the display, the browser, the live view and the RPC server. tini (PID 1) forwards
# signals, so `docker stop` ends everything in well under a second.
set -eu
data="${BROWSER_DATA_DIR:-/data}"
mkdir -p "$data/profile"
# A profile copied from a crashed container keeps its lock; this container owns it now.
rm -f "$data/profile/SingletonLock" "$data/profile/SingletonSocket" "$data/profile/SingletonCookie"

export DISPLAY=:99
Xvfb :99 -screen 0 1280x800x24 -nolisten tcp >/tmp/xvfb.log 2>&1 &
# Chromium and x11vnc give up at once without a display: wait for Xvfb's socket first (a
# loaded host can take seconds to bring it up).
for _ in $(seq 1 600); do
  [ -S /tmp/.X11-unix/X99 ] && break
  sleep 0.02
done

# Headful Chromium binds CDP to loopback whatever it is told; socat publishes it on 9222.
# No --remote-allow-origins: a DevTools WebSocket that carries an Origin (every one a web
# page opens) is refused; the gateway sends none.
chromium --no-sandbox --disable-gpu --no-first-run --no-default-browser-check \
  --disable-background-networking --disable-component-update --disable-sync \
  --disable-dev-shm-usage --window-position=0,0 --window-size=1280,800 \
  --user-data-dir="$data/profile" --remote-debugging-port=9223 \
  about:blank >/tmp/chromium.log 2>&1 &
socat TCP-LISTEN:9222,fork,reuseaddr,bind=0.0.0.0 TCP:127.0.0.1:9223 &

case "${BROWSER_ENABLE_UI:-true}" in
  1|true|yes|on)
    # -loop: should x11vnc ever exit, it starts again.
    x11vnc -display :99 -forever -loop200 -shared -nopw -localhost -rfbport 5900 -quiet >/tmp/x11vnc.log 2>&1 &
    # With a key from the gateway, the VNC WebSocket opens only for requests that carry it.
    if [ -n "${LAZYGATE_RUNTIME_KEY:-}" ]; then
      PYTHONPATH=/opt/runtime websockify --web /usr/share/novnc \
        --auth-plugin runtime_key_auth.RuntimeKey --auth-source "$LAZYGATE_RUNTIME_KEY" \
        6080 127.0.0.1:5900 >/tmp/websockify.log 2>&1 &
    else
      websockify --web /usr/share/novnc 6080 127.0.0.1:5900 >/tmp/websockify.log 2>&1 &
    fi
    ;;
esac

exec python3 /opt/runtime/rpc_server.py
