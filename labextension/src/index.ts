/**
 * aios-lab: the JupyterLab sidebar of aios_lab (jobs, devices, models, endpoints, datasets) and a
 * main-area panel per job. It talks only to the REST routes of the aios_lab server extension.
 */
import { ILabShell, ILayoutRestorer, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { ICommandPalette, MainAreaWidget, WidgetTracker } from '@jupyterlab/apputils';

import { AiosAPI } from './api';
import { aiosIcon } from './icon';
import { JobPanel } from './jobpanel';
import { AiosSidebar, SidebarModel } from './sidebar';

namespace CommandIDs {
  export const openSidebar = 'aios:open-sidebar';
  export const openJob = 'aios:open-job';
  export const refresh = 'aios:refresh';
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'aios-lab:plugin',
  description: 'A sidebar that tracks aios_lab jobs, devices, models, endpoints and datasets live.',
  autoStart: true,
  requires: [ILabShell],
  optional: [ILayoutRestorer, ICommandPalette],
  activate: (app: JupyterFrontEnd, shell: ILabShell, restorer: ILayoutRestorer | null, palette: ICommandPalette | null) => {
    const api = new AiosAPI(app.serviceManager.serverSettings);
    const model = new SidebarModel(api);
    const tracker = new WidgetTracker<MainAreaWidget<JobPanel>>({ namespace: 'aios-job' });

    const sidebar = new AiosSidebar({
      model,
      openJob: name => void app.commands.execute(CommandIDs.openJob, { name })
    });
    shell.add(sidebar, 'left', { rank: 600 });
    if (restorer) {
      restorer.add(sidebar, sidebar.id);
      void restorer.restore(tracker, {
        command: CommandIDs.openJob,
        args: w => ({ name: w.content.name }),
        name: w => w.content.name
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
        const open = tracker.find(w => w.content.name === name);
        if (open) {
          shell.activateById(open.id);
          return open;
        }
        const content = new JobPanel(api, name, () => void model.refresh());
        const widget = new MainAreaWidget({ content });
        widget.id = content.id;
        widget.title.label = content.title.label;
        widget.title.caption = content.title.caption;
        widget.title.icon = aiosIcon;
        widget.title.closable = true;
        void tracker.add(widget);
        shell.add(widget, 'main');
        shell.activateById(widget.id);
        return widget;
      }
    });
    if (palette) {
      palette.addItem({ command: CommandIDs.openSidebar, category: 'AIOS' });
      palette.addItem({ command: CommandIDs.refresh, category: 'AIOS' });
    }
  }
};

export default plugin;
