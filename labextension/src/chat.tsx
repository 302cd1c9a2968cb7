/**
 * The main-area Chat panel of one language model: the conversation, a box to type in (Enter sends,
 * Shift+Enter starts a new line), Stop, and a line with the endpoint, tokens and tokens/s of the last reply.
 * Replies stream from POST /aios/api/chat: the Jupyter server extension picks the endpoint and holds its
 * token; the browser never sees one. Stop aborts the fetch, and the server then closes its request to the
 * endpoint (which frees the reply's KV slot).
 */
import { Button, ReactWidget } from '@jupyterlab/ui-components';
import * as React from 'react';

import { AiosAPI } from './api';
import { IChatMessage, IChatReply, chatStats, emptyReply, feedChat } from './model';

export class ChatPanel extends ReactWidget {
  constructor(
    readonly api: AiosAPI,
    readonly model: string
  ) {
    super();
    this.addClass('aios-chat-panel');
    this.id = `aios-chat-${model}`;
    this.title.label = `Chat: ${model}`;
    this.title.caption = `Chat with ${model} on its serving endpoint`;
    this.title.closable = true;
  }

  /** The conversation so far (the reply being streamed is not in it yet). */
  get messages(): IChatMessage[] {
    return this._messages;
  }

  get busy(): boolean {
    return this._abort !== null;
  }

  dispose(): void {
    this.stop();
    super.dispose();
  }

  /** Send `text` (or what is in the box) as the user's next message and stream the reply. */
  async send(text?: string): Promise<void> {
    const content = (text ?? this._input).trim();
    if (!content || this.busy) {
      return;
    }
    this._messages = [...this._messages, { role: 'user', content }];
    this._input = '';
    this._error = '';
    this._reply = emptyReply();
    const abort = (this._abort = new AbortController());
    this.update();
    const started = performance.now();
    let state = { reply: this._reply, rest: '' };
    try {
      const response = await this.api.chat({ model: this.model, messages: this._messages }, abort.signal);
      this._endpoint = response.headers.get('X-Aios-Endpoint') ?? this._endpoint;
      if (!response.body) {
        throw new Error('this browser cannot read a streamed answer');
      }
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      for (;;) {
        const { done, value } = await reader.read();
        if (done) {
          break;
        }
        state = feedChat(state, decoder.decode(value, { stream: true }));
        this._reply = state.reply;
        this.update();
        if (state.reply.done) {
          void reader.cancel();
          break;
        }
      }
      if (state.reply.error) {
        this._error = state.reply.error;
      } else if (!state.reply.done) {
        this._error = 'The reply ended early: the endpoint or the Jupyter server stopped. Send again to retry.';
      }
    } catch (reason) {
      if (abort.signal.aborted) {
        state.reply = { ...state.reply, finish: state.reply.finish ?? 'stopped' };
      } else {
        this._error = reason instanceof Error ? reason.message : String(reason);
      }
    } finally {
      const reply = state.reply;
      if (reply.text || (reply.done && !reply.error)) {
        this._messages = [...this._messages, { role: 'assistant', content: reply.text }];
      } else {
        // nothing came back (an error, or stopped at once): the message goes back in the box to send again,
        // so the conversation keeps alternating user and assistant as chat templates expect
        this._messages = this._messages.slice(0, -1);
        this._input = this._input || content;
      }
      const seconds = (performance.now() - started) / 1000;
      this._stats = reply.done || reply.text ? chatStats(reply, this._endpoint, seconds) : this._stats;
      if (reply.finish === 'stopped') {
        this._stats = [this._stats, 'stopped'].filter(Boolean).join(' · ');
      }
      this._reply = null;
      this._abort = null;
      this.update();
    }
  }

  /** Stop the reply being streamed (what came so far stays in the conversation). */
  stop(): void {
    this._abort?.abort();
  }

  /** Forget the conversation. */
  clear(): void {
    this.stop();
    this._messages = [];
    this._error = '';
    this._stats = '';
    this.update();
  }

  protected onAfterShow(): void {
    this.node.querySelector('textarea')?.focus();
  }

  render(): JSX.Element {
    const reply: IChatReply | null = this._reply;
    return (
      <div className="aios-panel-body aios-chat" data-model={this.model} data-busy={String(this.busy)}>
        <div className="aios-panel-head">
          <h2>{this.model}</h2>
          <Button small minimal className="aios-chat-clear" title="Start a new conversation" disabled={this._messages.length === 0} onClick={() => this.clear()}>
            New chat
          </Button>
        </div>
        <div className="aios-chat-log" role="log" aria-live="polite">
          {this._messages.length === 0 && !reply && (
            <div className="aios-empty">Ask {this.model} something. It answers from its serving endpoint; the Jupyter server holds the token.</div>
          )}
          {this._messages.map((m, i) => (
            <ChatMessage key={i} role={m.role} text={m.content} model={this.model} />
          ))}
          {reply && <ChatMessage role="assistant" text={reply.text} model={this.model} streaming />}
          {this._error && (
            <div className="aios-error aios-chat-error" role="alert">
              {this._error}
            </div>
          )}
        </div>
        <div className="aios-row-meta aios-dim aios-chat-stats" title="the endpoint, the version that answered, tokens and tokens/s of the last reply">
          {this._stats || '\u00a0'}
        </div>
        <div className="aios-chat-compose">
          <textarea
            className="jp-mod-styled aios-chat-input"
            rows={3}
            placeholder="Message (Enter sends, Shift+Enter: new line)"
            aria-label={`Message to ${this.model}`}
            value={this._input}
            onChange={e => {
              this._input = e.target.value;
              this.update();
            }}
            onKeyDown={e => {
              if (e.key === 'Enter' && !e.shiftKey && !e.nativeEvent.isComposing) {
                e.preventDefault();
                void this.send();
              }
            }}
          />
          <div className="aios-chat-buttons">
            {this.busy ? (
              <Button className="aios-chat-stop" data-action="stop" title="Stop this reply" onClick={() => this.stop()}>
                Stop
              </Button>
            ) : (
              <Button className="aios-chat-send" data-action="send" title="Send (Enter)" disabled={!this._input.trim()} onClick={() => void this.send()}>
                Send
              </Button>
            )}
          </div>
        </div>
      </div>
    );
  }

  private _messages: IChatMessage[] = [];
  private _reply: IChatReply | null = null;
  private _input = '';
  private _error = '';
  private _stats = '';
  private _endpoint: string | null = null;
  private _abort: AbortController | null = null;
}

function ChatMessage(props: { role: string; text: string; model: string; streaming?: boolean }): JSX.Element {
  const who = props.role === 'user' ? 'You' : props.role === 'assistant' ? props.model : props.role;
  return (
    <div className={`aios-chat-message aios-chat-${props.role}${props.streaming ? ' aios-chat-streaming' : ''}`} data-role={props.role}>
      <div className="aios-chat-who">{who}</div>
      <div className="aios-chat-text">{props.text || (props.streaming ? '…' : '')}</div>
    </div>
  );
}
