import { strict as assert } from 'node:assert';
import { test } from 'node:test';

import { applyChatEvent, chatStats, emptyReply, feedChat, groupModels, isLanguageModel, sseEvents } from '../src/model';

const chunk = (content: string | null, finish: string | null = null, index = 0) =>
  JSON.stringify({
    model: 'chat:1',
    object: 'chat.completion.chunk',
    choices: [{ index, delta: content === null ? {} : { content }, finish_reason: finish }]
  });

test('server-sent events split on blank lines, whatever the line ends, and keep the rest', () => {
  assert.deepEqual(sseEvents('data: a\n\ndata: b\n\ndata: c'), { events: ['a', 'b'], rest: 'data: c' });
  assert.deepEqual(sseEvents('data: a\r\n\r\n: a comment\n\nevent: x\ndata: 1\ndata:2\n\n'), { events: ['a', '1\n2'], rest: '' });
  assert.deepEqual(sseEvents(''), { events: [], rest: '' });
});

test('a reply accumulates its text, finish, usage and model; [DONE] ends it', () => {
  let r = emptyReply();
  r = applyChatEvent(r, JSON.stringify({ model: 'chat:1', choices: [{ index: 0, delta: { role: 'assistant', content: '' } }] }));
  r = applyChatEvent(r, chunk('Hel'));
  r = applyChatEvent(r, chunk('lo'));
  r = applyChatEvent(r, chunk('ignored', null, 1)); // only the first choice is shown
  r = applyChatEvent(r, chunk(null, 'length'));
  r = applyChatEvent(r, JSON.stringify({ choices: [], usage: { prompt_tokens: 9, completion_tokens: 2 } }));
  assert.equal(r.text, 'Hello');
  assert.equal(r.finish, 'length');
  assert.equal(r.model, 'chat:1');
  assert.deepEqual([r.promptTokens, r.completionTokens, r.done], [9, 2, false]);
  assert.equal(applyChatEvent(r, '[DONE]').done, true);
  assert.equal(applyChatEvent(r, 'not json'), r); // unknown events change nothing
  assert.equal(r.text, 'Hello'); // pure: the earlier reply is unchanged
});

test('an error event ends the reply with its one-line message', () => {
  const r = applyChatEvent({ ...emptyReply(), text: 'par' }, JSON.stringify({ error: { message: 'the model failed', type: 'server_error' } }));
  assert.deepEqual([r.text, r.error, r.done], ['par', 'the model failed', true]);
  assert.equal(applyChatEvent(emptyReply(), '{"error": "plain"}').error, 'plain');
});

test('chunks split anywhere give the same reply as the whole stream', () => {
  const stream = [chunk('The '), chunk('cat'), chunk(' sat.'), chunk(null, 'stop'), JSON.stringify({ choices: [], usage: { prompt_tokens: 3, completion_tokens: 3 } }), '[DONE]']
    .map(d => `data: ${d}\n\n`)
    .join('');
  const whole = feedChat({ reply: emptyReply(), rest: '' }, stream);
  for (const size of [1, 3, 7, 50]) {
    let state = { reply: emptyReply(), rest: '' };
    for (let i = 0; i < stream.length; i += size) {
      state = feedChat(state, stream.slice(i, i + size));
    }
    assert.deepEqual(state, whole, `pieces of ${size}`);
  }
  assert.deepEqual([whole.reply.text, whole.reply.finish, whole.reply.done, whole.rest], ['The cat sat.', 'stop', true, '']);
});

test('the stats line: endpoint, version, tokens and rate', () => {
  const r = { ...emptyReply(), model: 'chat:1', completionTokens: 12, finish: 'stop', done: true };
  assert.equal(chatStats(r, 'http://127.0.0.1:8500', 0.5), '127.0.0.1:8500 · chat:1 · 12 tokens · 24 tok/s');
  assert.equal(chatStats({ ...r, completionTokens: 1, finish: 'length' }, null, null), 'chat:1 · 1 token · cut at max tokens');
  assert.equal(chatStats(emptyReply(), null, 1), '');
});

test('language models are the ones whose signature generates text; they get Chat', () => {
  const lm = { name: 'chat', version: 1, signature: { inputs: [], generate: { inputs: [], outputs: [] } } };
  const mlp = { name: 'digits', version: 1, signature: { inputs: [], outputs: [] } };
  assert.equal(isLanguageModel(lm), true);
  assert.equal(isLanguageModel(mlp), false);
  assert.equal(isLanguageModel({ name: 'x' }), false);
  assert.deepEqual(
    groupModels([lm, mlp]).map(m => [m.name, m.lm]),
    [
      ['chat', true],
      ['digits', false]
    ]
  );
});
