/**
 * aios-lab: the JupyterLab sidebar of aios_lab (jobs, devices, models, endpoints, datasets) and a
 * main-area panel per job, sweep, comparison and chat. It talks only to the REST routes of the aios_lab server
 * extension (a chat streams from an endpoint through it: the server holds the token).
 */
import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';

import { AiosAPI } from './api';
import { ChatPanel } from './chat';
import { aiosIcon } from './icon';
import { JobPanel } from './jobpanel';
import { ComparePanel, SweepPanel } from './panels';
import { AiosSidebar, SidebarModel } from './sidebar';

namespace CommandIDs {
  export const openSidebar = 'aios:open-sidebar';
  export const openJob = 'aios:open-job';
  export const openSweep = 'aios:open-sweep';
  export const openCompare = 'aios:open-compare';
  export const openChat = 'aios:open-chat';
  export const refresh = 'aios:refresh';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'aios-lab:plugin',
  description: 'A sidebar that tracks aios_lab jobs, sweeps, devices, models, endpoints and datasets live.',
  autoStart: true,
  requires: [ILabShell],
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (app: JupyterFrontEnd, shell: ILabShell, restorer: ILayoutRestorer | null, palette: ICommandPalette | null) => {
    const api = new AiosAPI(app.serviceManager.serverSettings);
    const model = new SidebarModel(api);
    const tracker = new WidgetTracker<MainAreaWidget<JobPanel>>({ namespace: 'aios-job' });
    const sweepTracker = new WidgetTracker<MainAreaWidget<SweepPanel>>({ namespace: 'aios-sweep' });
    const compareTracker = new WidgetTracker<MainAreaWidget<ComparePanel>>({ namespace: 'aios-compare' });
    const chatTracker = new WidgetTracker<MainAreaWidget<ChatPanel>>({ namespace: 'aios-chat' });

    const sidebar = new AiosSidebar({
      model,
      openJob: name => void app.commands.execute(CommandIDs.openJob, { name }),
      openSweep: name => void app.commands.execute(CommandIDs.openSweep, { name }),
      openCompare: jobs => void app.commands.execute(CommandIDs.openCompare, { jobs: jobs.join(',') }),
      openChat: model => void app.commands.execute(CommandIDs.openChat, { model })
    });

    /** The tab of `t` whose content is `same`, brought to the front, or a new tab with `make()` in the main area. */
    const show = <T extends Widget>(
      t: WidgetTracker<MainAreaWidget<T>>,
      same: (content: T) => boolean,
      make: () => T
    ): MainAreaWidget<T> => {
      const open = t.find(w => same(w.content));
      if (open) {
        shell.activateById(open.id);
        return open;
      }
      const content = make();
      const widget = new MainAreaWidget<T>({ content });
      widget.id = content.id;
      widget.title.label = content.title.label;
      widget.title.caption = content.title.caption;
      widget.title.icon = aiosIcon;
      widget.title.closable = true;
      void t.add(widget);
      shell.add(widget, 'main');
      shell.activateById(widget.id);
      return widget;
    };
    shell.add(sidebar, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
      void restorer.restore(tracker, {
        command: CommandIDs.openJob,
        args: w => ({ name: w.content.name }),
        name: w => w.content.name
      });
      void restorer.restore(sweepTracker, {
        command: CommandIDs.openSweep,
        args: w => ({ name: w.content.name }),
        name: w => w.content.name
      });
      void restorer.restore(compareTracker, {
        command: CommandIDs.openCompare,
        args: w => ({ jobs: w.content.jobs.join(',') }),
        name: w => w.content.jobs.join(',')
      });
      void restorer.restore(chatTracker, {
        command: CommandIDs.openChat,
        args: w => ({ model: w.content.model }),
        name: w => w.content.model
      });
    }

    app.commands.addCommand(CommandIDs.openSidebar, {
      label: 'AIOS: Show Jobs Sidebar',
      icon: aiosIcon,
      execute: () => shell.activateById(sidebar.id)
    });
    app.commands.addCommand(CommandIDs.refresh, {
      label: 'AIOS: Refresh',
      execute: () => model.refresh()
    });
    app.commands.addCommand(CommandIDs.openJob, {
      label: args => (args.name ? `AIOS: Open Job ${args.name}` : 'AIOS: Open Job'),
      icon: aiosIcon,
      execute: args => {
        const name = String(args.name ?? '');
        if (!name) {
          return;
        }
        return show(tracker, c => c.name === name, () => new JobPanel(api, name, () => void model.refresh()));
      }
    });
    app.commands.addCommand(CommandIDs.openSweep, {
      label: args => (args.name ? `AIOS: Open Sweep ${args.name}` : 'AIOS: Open Sweep'),
      icon: aiosIcon,
      execute: args => {
        const name = String(args.name ?? '');
        if (!name) {
          return;
        }
        const openJob = (job: string) => void app.commands.execute(CommandIDs.openJob, { name: job });
        return show(sweepTracker, c => c.name === name, () => new SweepPanel(api, name, openJob));
      }
    });
    app.commands.addCommand(CommandIDs.openCompare, {
      label: 'AIOS: Compare Jobs',
      icon: aiosIcon,
      execute: args => {
        const jobs = String(args.jobs ?? '')
          .split(',')
          .map(j => j.trim())
          .filter(Boolean);
        if (jobs.length === 0) {
          return;
        }
        const key = jobs.join(',');
        return show(compareTracker, c => c.jobs.join(',') === key, () => new ComparePanel(api, jobs));
      }
    });
    app.commands.addCommand(CommandIDs.openChat, {
      label: args => (args.model ? `AIOS: Chat with ${args.model}` : 'AIOS: Chat'),
      icon: aiosIcon,
      execute: args => {
        const model = String(args.model ?? '');
        if (!model) {
          return;
        }
        return show(chatTracker, c => c.model === model, () => new ChatPanel(api, model));
      }
    });
    if (palette) {
      palette.addItem({ command: CommandIDs.openSidebar, category: 'AIOS' });
      palette.addItem({ command: CommandIDs.refresh, category: 'AIOS' });
    }
  }
};

export default plugin;
