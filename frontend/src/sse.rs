//! Server-sent events with a visible connection state. The browser's
//! EventSource reconnects by itself and sends `Last-Event-ID`, so a stream
//! catches up after a drop; this wrapper reports the state and keeps the
//! listeners alive until the owning view is cleaned up. A stream that ends
//! on purpose sends `end` last: the wrapper then closes it (no reconnect,
//! no replay) and reports `Ended`.

use leptos::prelude::*;
use wasm_bindgen::prelude::*;
use web_sys::{EventSource, MessageEvent};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conn {
    Connecting,
    Open,
    Reconnecting,
    Closed,
    /// The server said the stream is complete.
    Ended,
}

struct Held {
    source: EventSource,
    _closures: Vec<Closure<dyn FnMut(web_sys::Event)>>,
}

/// Opens `url`, calls `on_event(name, data)` for each named event, and
/// closes when the current reactive owner is cleaned up.
pub fn subscribe(
    url: &str,
    names: &[&str],
    on_event: impl Fn(&str, String) + 'static,
    state: WriteSignal<Conn>,
) {
    let Ok(source) = EventSource::new(url) else {
        state.set(Conn::Closed);
        return;
    };
    state.set(Conn::Connecting);
    let handler = std::rc::Rc::new(on_event);
    let mut closures: Vec<Closure<dyn FnMut(web_sys::Event)>> = Vec::new();
    for name in names {
        let name_owned = name.to_string();
        let h = handler.clone();
        let c = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            if let Some(m) = e.dyn_ref::<MessageEvent>() {
                if let Some(data) = m.data().as_string() {
                    h(&name_owned, data);
                }
            }
        });
        let _ = source.add_event_listener_with_callback(name, c.as_ref().unchecked_ref());
        closures.push(c);
    }
    // After the caller's own `end` handler, if it has one.
    let src = source.clone();
    let end = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        src.close();
        state.set(Conn::Ended);
    });
    let _ = source.add_event_listener_with_callback("end", end.as_ref().unchecked_ref());
    closures.push(end);
    let open = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| state.set(Conn::Open));
    source.set_onopen(Some(open.as_ref().unchecked_ref()));
    closures.push(open);
    let src = source.clone();
    let err = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        // CONNECTING (0) means the browser is retrying; CLOSED (2) that it gave up.
        state.set(if src.ready_state() == 2 {
            Conn::Closed
        } else {
            Conn::Reconnecting
        });
    });
    source.set_onerror(Some(err.as_ref().unchecked_ref()));
    closures.push(err);
    let held = StoredValue::new_local(Some(Held {
        source,
        _closures: closures,
    }));
    on_cleanup(move || {
        held.update_value(|h| {
            if let Some(h) = h.take() {
                h.source.close();
            }
        });
    });
}
