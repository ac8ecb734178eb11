/* placeholder until app.c lands */
int
main(void)
{
	return 1;
}
