/* MPI constants that are C macros (not symbols), for src/comm/mpi. */
#include <mpi.h>

void *convoy_mpi_in_place(void) { return MPI_IN_PLACE; }
