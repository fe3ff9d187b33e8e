//! The offline LLM's replies for the content pipeline: rules that match on the request's
//! content (agent role, research round, requested schema), so they hold whatever order requests
//! arrive in.

use flow_llm::{Match, Reply, TestServer};
use serde_json::json;

/// The offline server's replies: rules that match on the request's content (agent role,
/// research round, requested schema), so they hold whatever order requests arrive in.
pub fn script(server: &TestServer, topic: &str) {
    let known = topic.to_lowercase().contains("heat pump");

    // The researcher: first a search, then notes from the results.
    server.when(Match::system_contains("Senior Research Analyst").and(Match::has_tool_results())).respond(|req| {
        let results: Vec<&str> = req
            .chat
            .messages
            .iter()
            .filter(|m| m.role == flow_llm::Role::Tool)
            .map(flow_llm::Message::text_or_empty)
            .collect();
        Reply::text(format!("Research notes from the search:\n{}", results.join("\n")))
    });
    let query = format!("{topic} figures");
    server
        .when(Match::system_contains("Senior Research Analyst"))
        .reply(Reply::tool_call("search_web", json!({ "query": query })));

    // The analyst: a typed brief whose quality depends on the round.
    for round in 1..=3 {
        let brief = scripted_brief(topic, known, round);
        server
            .when(Match::schema_named("ResearchBrief").and(Match::last_user_contains(format!("for round {round} "))))
            .reply(Reply::json(&brief));
    }

    let draft = format!(
        "# {title}\n\nResearch-backed notes on {topic}: what the figures say, what they cost, and what is still uncertain.",
        title = capitalise(topic)
    );
    server.when(Match::system_contains("Content Writer")).reply(Reply::text(draft));
    let article = json!({
        "title": format!("{}: what the numbers say", capitalise(topic)),
        "body": format!("Edited article on {topic}. Every figure is attributed to its source; open questions are stated as such."),
        "editor_notes": ["Cut the introduction by a third", "Attributed every figure to its source", "Kept the caveats on running costs"],
    });
    server.when(Match::system_contains("Senior Editor")).reply(Reply::json(&article));
}

fn scripted_brief(topic: &str, known: bool, round: u32) -> serde_json::Value {
    let source = |n: &str, title: &str| json!({ "title": title, "url": format!("https://example.org/{n}") });
    if !known {
        return json!({
            "summary": format!("Little solid evidence on {topic} turned up; sources disagree."),
            "key_statistics": [],
            "sources": [source("forum", "Forum thread")],
            "confidence": 0.3,
        });
    }
    let all_stats = [
        "Cold-climate units kept a seasonal COP near 2.5 at sites averaging -10 °C",
        "About 1.5 kW per home is added to the winter evening peak",
        "Running costs fall below gas when electricity costs under 3x the gas price per kWh",
        "Most detached-house retrofits needed no new radiators",
    ];
    let all_sources = [
        source("cold-climate-field-study", "Cold-climate field study, 2023"),
        source("running-costs", "Consumer agency guide to running costs"),
        source("grid-winter-peak", "Grid operator note on winter peaks"),
        source("installer-survey", "Installer survey"),
    ];
    let (stats, sources, confidence) = match round {
        1 => (2, 1, 0.55),
        2 => (3, 2, 0.7),
        _ => (4, 4, 0.88),
    };
    json!({
        "summary": format!("Modern heat pumps heat homes well in cold climates; costs depend on electricity prices (round {round})."),
        "key_statistics": all_stats[..stats],
        "sources": all_sources[..sources],
        "confidence": confidence,
    })
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}
