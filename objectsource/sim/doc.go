// Package sim simulates the program the customer attaches to the brief, both halves of it.
// Upstream serves GET /objects/{id} with the customer's random latency and online rule.
// Sender posts {"object_ids":[...]} callbacks the way the customer's client does: 1 s
// timeout, no retries, keep-alive connections, each answer closed without reading it.
//
// Tests host Upstream with httptest and drive Sender, building a ledger of what was sent
// from its OnSendFunc hook; objectsource's main runs both in one process. With more
// Senders or a fixed Rate, Sender doubles as a load generator.
//
// It deliberately does not retry a post, remember anything across runs, or check what the
// service under test did with a callback: it reports what it sent and what came back, and
// judging that is the caller's job.
package sim
