// What the dashboard's script finds on the page before it runs: uPlot (/assets/uplot.js) and the
// CLI's format functions (/assets/format.js, made from src/observe/format.ts and src/net/addr.ts),
// typed as the functions themselves are.
type Format = typeof import('../src/observe/format.js');

declare const uPlot: typeof import('uplot').default;
declare const IEC: Format['IEC'];
declare const formatBytes: Format['formatBytes'];
declare const formatRate: Format['formatRate'];
declare const formatAge: Format['formatAge'];
declare const isNotable: Format['isNotable'];
declare const isLinkLocal: typeof import('../src/net/addr.js').isLinkLocal;
