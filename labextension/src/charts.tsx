/**
 * The job list's loss sparkline. The job panel's charts are not drawn here: the server renders them with
 * aios_lab.charts, the module the notebook widget draws with (GET /aios/api/jobs/NAME/charts).
 */
import * as React from 'react';

import { sparkPath } from './model';

export function Sparkline(props: { values: number[]; width?: number; height?: number; log?: boolean; title?: string }): JSX.Element | null {
  const width = props.width ?? 64;
  const height = props.height ?? 16;
  const d = sparkPath(props.values, width, height, props.log ?? false);
  if (!d) {
    return null;
  }
  return (
    <svg className="aios-sparkline" width={width} height={height} viewBox={`0 0 ${width} ${height}`} role="img" aria-label={props.title}>
      {props.title && <title>{props.title}</title>}
      <path d={d} />
    </svg>
  );
}

/**
 * Markup the aios server extension rendered (aios_lab.charts: SVG and inline styles built from numbers, every
 * text escaped), shown as it is. Only the same-origin, authenticated aios API feeds it.
 */
export function ServerCharts(props: { html: string | null }): JSX.Element {
  if (props.html === null) {
    return <div className="aios-empty">Loading charts…</div>;
  }
  return <div className="aios-charts-host" dangerouslySetInnerHTML={{ __html: props.html }} />;
}
