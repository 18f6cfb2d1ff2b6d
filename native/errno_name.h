/* The one errno table of the addon: holdfast_native.c (thrown errors' .code) and the relay
   (a tunnel's end reason) name errors the same way, as Node does ("ECONNRESET"). */
#ifndef HOLDFAST_ERRNO_NAME_H
#define HOLDFAST_ERRNO_NAME_H

/* The errno's name, or "EUNKNOWN" for one not listed. */
const char *hf_errno_name(int e);

#endif
