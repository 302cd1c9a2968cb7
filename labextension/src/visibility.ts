/**
 * Whether someone can see a widget: Lumino's show/hide/attach and the browser tab's own
 * visibility, watched in one place for the sidebar and the job panels.
 */
import { IMessageHandler, Message, MessageLoop } from '@lumino/messaging';
import { Widget } from '@lumino/widgets';

const WATCHED = new Set(['after-show', 'after-hide', 'after-attach']);

/**
 * Call `onChange(visible)` whenever the widget may have been shown or hidden. The call comes just
 * after Lumino has handled the message (so `isVisible` is current); the watch ends with the widget.
 */
export function watchVisibility(widget: Widget, onChange: (visible: boolean) => void): void {
  const sync = () => {
    if (!widget.isDisposed) {
      onChange(widget.isVisible && document.visibilityState !== 'hidden');
    }
  };
  const hook = (_handler: IMessageHandler, msg: Message): boolean => {
    if (WATCHED.has(msg.type)) {
      void Promise.resolve().then(sync);
    }
    return true;
  };
  document.addEventListener('visibilitychange', sync);
  MessageLoop.installMessageHook(widget, hook);
  widget.disposed.connect(() => document.removeEventListener('visibilitychange', sync));
}
