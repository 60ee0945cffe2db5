//! A router that fans one input out to several topics. The manifest's `[config] routes` is a
//! comma-separated list of topics; every message is copied to each of them, with a `routed-from`
//! header naming the source topic. A message whose key starts with `TOPIC/` goes only to TOPIC
//! when TOPIC is one of the routes.

use std::sync::OnceLock;

use kp_guest::{HandlerError, HandlerResult, Message, Output, config};

static ROUTES: OnceLock<Vec<String>> = OnceLock::new();

fn init() -> Result<(), String> {
    let routes: Vec<String> = config::get("routes")
        .ok_or("the router needs [config] routes = \"topic-a,topic-b\"")?
        .split(',')
        .map(|t| t.trim().to_string())
        .filter(|t| !t.is_empty())
        .collect();
    if routes.is_empty() {
        return Err("[config] routes lists no topic".into());
    }
    let _ = ROUTES.set(routes);
    Ok(())
}

fn handle(msg: Message) -> HandlerResult {
    let routes = ROUTES.get().ok_or_else(|| HandlerError::bad_message("router not initialised"))?;
    let pinned = msg
        .key_str()
        .and_then(|k| k.split_once('/'))
        .map(|(topic, _)| topic)
        .filter(|topic| routes.iter().any(|r| r == topic));
    let targets = routes.iter().filter(|r| pinned.is_none_or(|p| p == r.as_str()));
    Ok(targets
        .map(|topic| {
            Output::from_message(&msg)
                .to_topic(topic.clone())
                .with_header("routed-from", msg.topic.clone())
        })
        .collect())
}

kp_guest::export_handler!(handle, init = init);
