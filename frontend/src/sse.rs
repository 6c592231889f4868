//! Server-sent events with a visible connection state. The browser's
//! EventSource reconnects by itself and sends `Last-Event-ID`, so a stream
//! catches up after a drop; this wrapper reports the state and keeps the
//! listeners alive until the owning view is cleaned up. A stream that ends
//! on purpose sends `end` last: the wrapper then closes it (no reconnect,
//! no replay) and reports `Ended`.
//!
//! Events are handed over in batches, every [`BATCH_MS`] at most: a page
//! catching up on a 10,000-peer job's 40,000 events redraws a few dozen
//! times, not 40,000 (signals changed in one batch redraw once).

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

/// How long an event may wait for others to be applied with it.
pub const BATCH_MS: i32 = 16;

/// Events received and not yet handed over: (name, data).
type Queue = std::rc::Rc<std::cell::RefCell<Vec<(std::rc::Rc<str>, String)>>>;

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
    use std::cell::Cell;
    use std::rc::Rc;
    let handler = Rc::new(on_event);
    let queue: Queue = Rc::default();
    let scheduled = Rc::new(Cell::new(false));
    // Cleared when the owner is cleaned up: a flush already scheduled then
    // touches nothing.
    let alive = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flush = {
        let (queue, scheduled, alive, handler) = (
            queue.clone(),
            scheduled.clone(),
            alive.clone(),
            handler.clone(),
        );
        Rc::new(move || {
            scheduled.set(false);
            let items = std::mem::take(&mut *queue.borrow_mut());
            if alive.load(std::sync::atomic::Ordering::Relaxed) {
                for (name, data) in items {
                    handler(&name, data);
                }
            }
        })
    };
    let mut closures: Vec<Closure<dyn FnMut(web_sys::Event)>> = Vec::new();
    for name in names {
        let name_owned: Rc<str> = Rc::from(*name);
        let (queue, scheduled, flush) = (queue.clone(), scheduled.clone(), flush.clone());
        let c = Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
            if let Some(m) = e.dyn_ref::<MessageEvent>() {
                if let Some(data) = m.data().as_string() {
                    queue.borrow_mut().push((name_owned.clone(), data));
                    if !scheduled.replace(true) {
                        let f = flush.clone();
                        // JS owns the one-shot closure: it is freed once run.
                        let cb = Closure::once_into_js(move || f());
                        if let Some(w) = web_sys::window() {
                            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(
                                cb.unchecked_ref(),
                                BATCH_MS,
                            );
                        }
                    }
                }
            }
        });
        let _ = source.add_event_listener_with_callback(name, c.as_ref().unchecked_ref());
        closures.push(c);
    }
    // After the caller's own `end` handler, if it has one.
    let src = source.clone();
    let flush_now = flush.clone();
    let end = Closure::<dyn FnMut(web_sys::Event)>::new(move |_| {
        // What came before `end` is applied before the page says ended.
        flush_now();
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
        alive.store(false, std::sync::atomic::Ordering::Relaxed);
        held.update_value(|h| {
            if let Some(h) = h.take() {
                h.source.close();
            }
        });
    });
}
